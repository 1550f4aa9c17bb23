package up

// Load exposes load.
var Load = load
