package audit

import "context"

// Requester is who made a request, as the audit entries of its writes
// record it.
type Requester struct {
	// Actor is the operator's name or the proxy's SPIFFE ID.
	Actor string
	// Source is the client's address.
	Source string
}

type requesterKey struct{}

// WithRequester returns ctx carrying r, for the entries of writes made
// with it (resource.Store.Apply and Delete).
func WithRequester(ctx context.Context, r Requester) context.Context {
	return context.WithValue(ctx, requesterKey{}, r)
}

// RequesterFrom returns the Requester of ctx, or one with the actor
// "system" when there is none.
func RequesterFrom(ctx context.Context) Requester {
	if r, ok := ctx.Value(requesterKey{}).(Requester); ok {
		return r
	}
	return Requester{Actor: ActorSystem}
}
