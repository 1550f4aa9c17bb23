package proxy

import (
	"maps"
	"slices"
	"sort"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// Dump is the engine's current configuration as /config_dump shows it. It
// holds no keys or secrets.
type Dump struct {
	Version       int64               `json:"version"`
	LastKnownGood bool                `json:"lastKnownGood,omitempty"`
	Service       string              `json:"service"`
	Peers         map[string][]string `json:"peers,omitempty"`
	Services      []string            `json:"services"`
	Destinations  []DumpDestination   `json:"destinations"`
	// BundleVersion is the snapshot's trust bundle version.
	BundleVersion int64 `json:"bundleVersion,omitempty"`
	// RevokedSerials are the serials of the SVIDs peers are refused with.
	RevokedSerials []string `json:"revokedSerials,omitempty"`
	// Gateway is the gateway's configuration, nil for a sidecar.
	Gateway *DumpGateway `json:"gateway,omitempty"`
}

// DumpGateway is a gateway's configuration in a Dump: its Gateway as
// applied (no keys: certificates name Secrets or files) and the names of
// the Secrets the snapshot holds, never their contents.
type DumpGateway struct {
	Resource *config.Gateway `json:"resource"`
	Secrets  []string        `json:"secrets,omitempty"`
	// UnavailableRoutes are the routes that answer 503 for want of a JWT
	// provider.
	UnavailableRoutes []string `json:"unavailableRoutes,omitempty"`
}

// DumpDestination is one callable service in a Dump.
type DumpDestination struct {
	Service   string   `json:"service"`
	Endpoints []string `json:"endpoints"`
}

// Dump returns the current configuration.
func (e *Engine) Dump() Dump {
	d := Dump{Service: e.cfg.Service.String(), Services: []string{}, Destinations: []DumpDestination{}}
	t := e.table.Load()
	if t == nil {
		return d
	}
	d.Version, d.LastKnownGood, d.Peers = t.version, t.lastKnownGood, t.peers
	d.BundleVersion = t.bundleVersion
	if len(t.revokedSerials) > 0 {
		d.RevokedSerials = slices.Sorted(slices.Values(t.revokedSerials))
	}
	for s := range t.services {
		d.Services = append(d.Services, s)
	}
	sort.Strings(d.Services)
	for name, dest := range t.dests {
		dd := DumpDestination{Service: name, Endpoints: []string{}}
		for _, ep := range dest.endpoints {
			dd.Endpoints = append(dd.Endpoints, ep.addr+" ("+ep.id.String()+")")
		}
		d.Destinations = append(d.Destinations, dd)
	}
	sort.Slice(d.Destinations, func(i, j int) bool { return d.Destinations[i].Service < d.Destinations[j].Service })
	if g := t.gateway; g != nil {
		d.Gateway = &DumpGateway{Resource: g.gw, Secrets: slices.Sorted(maps.Keys(g.secrets))}
		for _, r := range g.routes {
			if r.unavailable != "" {
				d.Gateway.UnavailableRoutes = append(d.Gateway.UnavailableRoutes, r.name)
			}
		}
	}
	return d
}
