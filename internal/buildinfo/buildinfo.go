// Package buildinfo owns what a Bulwark binary says about its own build: the
// release version and the VCS commit and Go version recorded by the Go
// toolchain.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version of this source tree.
const Version = "0.1.0-dev"

// Info describes a build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"goVersion"`
}

// Read returns the build information of the running binary.
func Read() Info {
	info := Info{Version: Version, Commit: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}
