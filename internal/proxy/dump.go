package proxy

import "sort"

// Dump is the engine's current configuration as /config_dump shows it. It
// holds no keys or secrets.
type Dump struct {
	Version       int64               `json:"version"`
	LastKnownGood bool                `json:"lastKnownGood,omitempty"`
	Service       string              `json:"service"`
	Peers         map[string][]string `json:"peers,omitempty"`
	Services      []string            `json:"services"`
	Destinations  []DumpDestination   `json:"destinations"`
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
	return d
}
