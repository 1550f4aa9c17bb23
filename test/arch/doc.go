// Package arch holds the tests that enforce Bulwark's architecture (DESIGN
// §8): every package says what it owns, the proxy never links control-plane
// storage or signing, only cmd/ exits the process, and production code never
// imports the testing package.
package arch
