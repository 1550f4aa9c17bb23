// Package web holds the dashboard's front end: plain HTML, CSS and
// JavaScript modules with no build step, embedded in the binary and served
// by internal/dashboard under /ui/. Nothing here is fetched from another
// origin.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Assets returns the dashboard's files, rooted at static/ (index.html,
// app.js, ...).
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // static is embedded: cannot happen
	}
	return sub
}
