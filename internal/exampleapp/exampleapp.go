// Package exampleapp owns the small HTTP apps of the shop demo, run by
// `bulwark up` through the hidden `bulwark example-app NAME` command. They
// are ordinary apps: they listen on loopback and call other services by name
// through their sidecar (HTTP_PROXY), knowing nothing of mTLS or policy.
//
//	web       GET /           calls catalog GET /products and orders GET /orders
//	          POST /order     calls orders POST /orders
//	catalog   GET /products, GET /products/{id}, GET /admin/export (not allowed to anyone);
//	          version v2 (a canary) also sells a standing desk
//	orders    GET /orders; POST /orders calls payments POST /charge
//	payments  POST /charge, GET /balance (not allowed to anyone)
//	rogue     every few seconds tries payments and catalog's admin: denied
//	echo      answers every request with what it received, as JSON
package exampleapp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Names returns the names of the built-in apps.
func Names() []string {
	return []string{"catalog", "echo", "orders", "payments", "rogue", "web"}
}

// Config configures an example app.
type Config struct {
	// Name of the app, one of Names().
	Name string
	// Listen is the host:port to serve on.
	Listen string
	// Log receives one line per notable event.
	Log io.Writer
	// Client calls other services; it must go through the sidecar
	// (http.ProxyFromEnvironment with HTTP_PROXY set).
	Client *http.Client
	// Every is the interval of the rogue's attempts. Default: 5s.
	Every time.Duration
	// Version of the app ("v1" when empty); the catalog's v2 sells one
	// more product, so a canary split shows in the shop.
	Version string
}

// Run serves the app until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	if !slices.Contains(Names(), cfg.Name) {
		return fmt.Errorf("unknown example app %q (known: %s)", cfg.Name, strings.Join(Names(), ", "))
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}, Timeout: 10 * time.Second}
	}
	if cfg.Every == 0 {
		cfg.Every = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	a := &app{cfg: cfg, orders: []order{{ID: 1, Product: "lamp", Status: "shipped"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	switch cfg.Name {
	case "web":
		mux.HandleFunc("GET /{$}", a.webHome)
		mux.HandleFunc("POST /order", a.webOrder)
	case "catalog":
		mux.HandleFunc("GET /products", a.products)
		mux.HandleFunc("GET /products/{id}", a.product)
		mux.HandleFunc("GET /admin/export", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"secret": "catalog admin export"})
		})
	case "orders":
		mux.HandleFunc("GET /orders", a.listOrders)
		mux.HandleFunc("POST /orders", a.createOrder)
	case "payments":
		mux.HandleFunc("POST /charge", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "charged", "by": r.Header.Get("X-Forwarded-Client-Cert")})
		})
		mux.HandleFunc("GET /balance", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]int{"balance": 1_000_000})
		})
	case "rogue":
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "nothing to see here") })
	case "echo":
		mux.HandleFunc("/", echo)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(cfg.Log, "%s app listening on %s\n", cfg.Name, ln.Addr())
	if cfg.Name == "rogue" {
		go a.rogue(ctx)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

type order struct {
	ID      int    `json:"id"`
	Product string `json:"product"`
	Status  string `json:"status"`
}

type app struct {
	cfg Config

	mu     sync.Mutex
	orders []order
}

func catalog(version string) []map[string]any {
	products := []map[string]any{
		{"id": "lamp", "name": "Desk lamp", "price": 39},
		{"id": "chair", "name": "Office chair", "price": 249},
		{"id": "mug", "name": "Mug", "price": 9},
	}
	if version == "v2" {
		products = append(products, map[string]any{"id": "desk", "name": "Standing desk (new in catalog v2)", "price": 399})
	}
	return products
}

func (a *app) products(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, catalog(a.cfg.Version))
}

func (a *app) product(w http.ResponseWriter, r *http.Request) {
	for _, p := range catalog(a.cfg.Version) {
		if p["id"] == r.PathValue("id") {
			writeJSON(w, http.StatusOK, p)
			return
		}
	}
	http.NotFound(w, r)
}

func (a *app) listOrders(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	writeJSON(w, http.StatusOK, a.orders)
}

func (a *app) createOrder(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Product string `json:"product"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in); err != nil || in.Product == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"product": "..."}`})
		return
	}
	status, _, err := a.call(r.Context(), http.MethodPost, "http://payments/charge", `{"amount":1}`)
	if err != nil || status != http.StatusOK {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf("payment failed: status %d %v", status, err)})
		return
	}
	a.mu.Lock()
	o := order{ID: len(a.orders) + 1, Product: in.Product, Status: "paid"}
	a.orders = append(a.orders, o)
	a.mu.Unlock()
	writeJSON(w, http.StatusCreated, o)
}

func (a *app) webHome(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	b.WriteString("Bulwark shop (every call below crossed two sidecars over mTLS)\n\n")
	for _, call := range []struct{ title, url string }{
		{"Products (from catalog)", "http://catalog/products"},
		{"Orders (from orders)", "http://orders/orders"},
	} {
		status, body, err := a.call(r.Context(), http.MethodGet, call.url, "")
		fmt.Fprintf(&b, "%s: ", call.title)
		switch {
		case err != nil:
			fmt.Fprintf(&b, "error: %v\n", err)
		case status != http.StatusOK:
			fmt.Fprintf(&b, "HTTP %d %s\n", status, strings.TrimSpace(body))
		default:
			fmt.Fprintf(&b, "%s\n", strings.TrimSpace(body))
		}
	}
	b.WriteString("\nPlace an order: curl -X POST -d '{\"product\":\"mug\"}' <this URL>/order\n")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, b.String())
}

func (a *app) webOrder(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	status, resp, err := a.call(r.Context(), http.MethodPost, "http://orders/orders", string(body))
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, resp)
}

// rogue keeps trying calls no policy allows; each is denied by its own
// sidecar and shows up in the mesh's log.
func (a *app) rogue(ctx context.Context) {
	attempts := []struct{ method, url string }{
		{http.MethodGet, "http://payments.default/balance"},
		{http.MethodPost, "http://payments.default/charge"},
		{http.MethodGet, "http://catalog.default/admin/export"},
	}
	t := time.NewTicker(a.cfg.Every)
	defer t.Stop()
	for i := 0; ; i++ {
		at := attempts[i%len(attempts)]
		status, _, err := a.call(ctx, at.method, at.url, "")
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fmt.Fprintf(a.cfg.Log, "rogue: %s %s -> error %v\n", at.method, at.url, err)
		} else {
			fmt.Fprintf(a.cfg.Log, "rogue: %s %s -> %d %s\n", at.method, at.url, status, http.StatusText(status))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *app) call(ctx context.Context, method, url, body string) (int, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.cfg.Client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, "", err
	}
	return resp.StatusCode, string(b), nil
}

// echo answers with what it received: method, path, query, host, headers and
// body.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"method":  r.Method,
		"path":    r.URL.EscapedPath(),
		"query":   r.URL.RawQuery,
		"host":    r.Host,
		"headers": r.Header,
		"body":    string(body),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
