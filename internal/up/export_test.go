package up

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Load exposes load.
var Load = load

// Exposed for the tests of the gateways, the certificates and the issuer.
var (
	SelfSigned      = selfSigned
	SelfSignedTTL   = selfSignedTTL
	MissingSecrets  = missingSecrets
	URLHost         = urlHost
	ParseJSONRecord = parseJSONRecord
	CheckLoopback   = checkLoopback
)

// Bind is a listener's planned address.
type Bind struct{ Listener, Protocol, Addr string }

// PlanGateways exposes planGateways: each Gateway's "namespace/name" and
// its listeners' addresses.
func PlanGateways(resources []config.Object, overrides map[string]string) (map[string][]Bind, error) {
	doors, err := planGateways(resources, overrides)
	if err != nil {
		return nil, err
	}
	out := map[string][]Bind{}
	for _, fd := range doors {
		for _, b := range fd.binds {
			out[fd.ref.String()] = append(out[fd.ref.String()], Bind{b.listener, b.protocol, b.addr})
		}
	}
	return out, nil
}

// DemoRoutePath exposes demoRoutePath.
func DemoRoutePath(gw *config.Gateway, demo *config.DemoIssuer) string {
	return demoRoutePath(gw, demo)
}

// Issuer is the demo issuer, for tests.
type Issuer struct{ is *issuer }

// NewIssuer exposes newIssuer.
func NewIssuer(spec config.DemoIssuer, c clock.Clock, log *slog.Logger) (*Issuer, error) {
	is, err := newIssuer(spec, c, log)
	return &Issuer{is}, err
}

// Provider exposes issuer.provider.
func (i *Issuer) Provider() *config.JWTProvider { return i.is.provider() }

// Handler is the issuer's HTTP handler.
func (i *Issuer) Handler() http.Handler { return i.is }

// JSONLogWriter exposes jsonLogWriter with a pretty handler named name.
func JSONLogWriter(w io.Writer, name string, onRecord func(slog.Record)) interface {
	Write([]byte) (int, error)
	Flush()
} {
	var mu sync.Mutex
	return &jsonLogWriter{
		h:        newPretty(w, &mu, name, slog.LevelInfo),
		raw:      &lineWriter{mu: &mu, w: w, name: name},
		onRecord: onRecord,
	}
}

// ServiceRef is identity.ServiceRef, for the tests' expectations.
type ServiceRef = identity.ServiceRef

// FollowHTTPSPort plans the Gateways of resources with overrides, runs
// followHTTPSPort on each, and returns the httpsPort of every HTTP
// listener ("ns/gw/listener") with what each call returned.
func FollowHTTPSPort(resources []config.Object, overrides map[string]string) (map[string]int, []string, error) {
	doors, err := planGateways(resources, overrides)
	if err != nil {
		return nil, nil, err
	}
	ports := map[string]int{}
	var moved []string
	for _, fd := range doors {
		moved = append(moved, fd.followHTTPSPort())
		for _, l := range fd.gw.Spec.Listeners {
			if l.Protocol == config.ListenerHTTP {
				ports[fd.ref.String()+"/"+l.Name] = l.HTTPSPort
			}
		}
	}
	return ports, moved, nil
}

// RunGatewayOn runs runGateway for the first Gateway of resources, its
// listeners moved by overrides, with the program exe, logging to log.
func RunGatewayOn(ctx context.Context, exe, dir string, resources []config.Object, overrides map[string]string, token string, log io.Writer, ready func(map[string]string)) error {
	doors, err := planGateways(resources, overrides)
	if err != nil {
		return err
	}
	g := gatewayRun{exe: exe, control: "127.0.0.1:1", bundle: "/nonexistent", dir: dir, level: slog.LevelInfo, log: log, logMu: &sync.Mutex{}}
	return runGateway(ctx, g, doors[0], token, ready)
}

// Banner exposes banner.
var Banner = banner
