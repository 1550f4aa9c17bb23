// Package e2e holds the black-box tests of the real bulwark binary: it is
// built once, and every test starts control planes, proxies, tiny apps and
// `bulwark up` as real processes on loopback with free ports and temporary
// directories, drives them through the CLI and real HTTP and TLS clients,
// and stops every process it started by its PID when it ends.
package e2e
