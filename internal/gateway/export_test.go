package gateway

// ClientKey exposes clientKey to the tests.
var ClientKey = clientKey
