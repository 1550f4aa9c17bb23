package control

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Bounds of Report under test.
const (
	MaxReportDenials   = maxReportDenials
	DefaultMaxDenials  = defaultMaxDenials
	MaxDenialReporters = maxReporters
)

// DenialLog wraps denialLog.
type DenialLog struct{ l *denialLog }

// NewDenialLog returns a denialLog keeping max entries.
func NewDenialLog(max int) *DenialLog { return &DenialLog{newDenialLog(max)} }

// Add merges entries reported by reporter.
func (d *DenialLog) Add(reporter string, ds ...*apiv1.Denial) { d.l.add(reporter, ds) }

// List lists the entries.
func (d *DenialLog) List(include func(string) bool, since time.Time) []*config.Denial {
	return d.l.list(include, since)
}

// CheckReport is checkReport.
func CheckReport(ctx context.Context, req *apiv1.ReportRequest, reporter spiffeid.ID, now time.Time,
	serves func(context.Context, identity.ServiceRef) (bool, error)) error {
	return checkReport(ctx, req, reporter, now, serves)
}
