package keymanager

// CheapArgon2 returns s with the least argon2id cost (1 pass over 64 KiB, 1
// lane), so that tests creating many keyrings stay fast. Production
// keyrings use the cost of PassphraseSecret.
func CheapArgon2(s Secret) Secret {
	s.argon2 = argon2Params{time: 1, memoryKiB: 64, threads: 1}
	return s
}
