package alert

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// metricFamily is a gathered family, indexed for Threshold rules.
type metricFamily struct {
	name    string
	typ     dto.MetricType
	metrics []*dto.Metric
}

// families indexes gathered families.
func families(mfs []*dto.MetricFamily) []*metricFamily {
	out := make([]*metricFamily, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, &metricFamily{name: mf.GetName(), typ: mf.GetType(), metrics: mf.GetMetric()})
	}
	return out
}

// sample is one series of a metric: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// samples returns the series of metric: a counter, gauge or untyped
// family of that name, or the _count or _sum of a histogram or summary.
func samples(fams []*metricFamily, metric string) []sample {
	var out []sample
	for _, f := range fams {
		var value func(m *dto.Metric) float64
		switch {
		case f.name == metric:
			switch f.typ {
			case dto.MetricType_COUNTER:
				value = func(m *dto.Metric) float64 { return m.GetCounter().GetValue() }
			case dto.MetricType_GAUGE:
				value = func(m *dto.Metric) float64 { return m.GetGauge().GetValue() }
			case dto.MetricType_UNTYPED:
				value = func(m *dto.Metric) float64 { return m.GetUntyped().GetValue() }
			}
		case f.name+"_count" == metric:
			switch f.typ {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				value = func(m *dto.Metric) float64 { return float64(m.GetHistogram().GetSampleCount()) }
			case dto.MetricType_SUMMARY:
				value = func(m *dto.Metric) float64 { return float64(m.GetSummary().GetSampleCount()) }
			}
		case f.name+"_sum" == metric:
			switch f.typ {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				value = func(m *dto.Metric) float64 { return m.GetHistogram().GetSampleSum() }
			case dto.MetricType_SUMMARY:
				value = func(m *dto.Metric) float64 { return m.GetSummary().GetSampleSum() }
			}
		}
		if value == nil {
			continue
		}
		for _, m := range f.metrics {
			labels := make(map[string]string, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out = append(out, sample{labels: labels, value: value(m)})
		}
	}
	return out
}

// seriesState is what a Threshold rule remembers of one series.
type seriesState struct {
	// prev and prevAt are the last value and its time (Rate).
	prev   float64
	prevAt time.Time
	// since is when the condition started to hold; zero when it does not.
	since time.Time
	seen  time.Time
}

// evaluateThresholds runs the Threshold rules over gathered metrics. e.mu
// is held.
func (e *Engine) evaluateThresholds(fams []*metricFamily, now time.Time) []*firing {
	var out []*firing
	for _, r := range e.rules {
		if r.detector != config.DetectorThreshold || r.threshold == nil || r.threshold.Value == nil {
			continue
		}
		p := r.threshold
		for _, s := range samples(fams, p.Metric) {
			if !hasLabels(s.labels, p.Labels) {
				continue
			}
			key := seriesName(p.Metric, s.labels)
			st, ok := r.series[key]
			if !ok {
				if len(r.series) >= maxSeries {
					continue
				}
				st = &seriesState{}
				r.series[key] = st
			}
			st.seen = now
			v := s.value
			if p.Rate {
				prev, prevAt := st.prev, st.prevAt
				st.prev, st.prevAt = s.value, now
				dt := now.Sub(prevAt).Seconds()
				if prevAt.IsZero() || dt <= 0 {
					continue
				}
				delta := s.value - prev
				if delta < 0 { // counter reset
					delta = s.value
				}
				v = delta / dt
			}
			if !compare(v, p.Op, *p.Value) {
				st.since = time.Time{}
				continue
			}
			if st.since.IsZero() {
				st.since = now
			}
			if now.Sub(st.since) < r.forDur {
				continue
			}
			what := p.Metric
			if p.Rate {
				what = "rate(" + p.Metric + ")"
			}
			f := e.fire(r, config.AlertStatus{
				Subject: key, Value: v,
				Summary: fmt.Sprintf("threshold: %s%s = %s %s %s", what, labelString(s.labels), formatFloat(v), p.Op, formatFloat(*p.Value)),
			}, now)
			if f != nil {
				out = append(out, f)
			}
		}
		for k, st := range r.series {
			if st.seen != now {
				delete(r.series, k)
			}
		}
	}
	return out
}

// compare applies op.
func compare(v float64, op string, value float64) bool {
	switch op {
	case config.OpGreater:
		return v > value
	case config.OpGreaterEqual:
		return v >= value
	case config.OpLess:
		return v < value
	case config.OpLessEqual:
		return v <= value
	case config.OpEqual:
		return v == value
	case config.OpNotEqual:
		return v != value
	}
	return false
}

// hasLabels reports whether labels include every pair of want.
func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// seriesName prints a series as Prometheus does: name{k="v",...}.
func seriesName(metric string, labels map[string]string) string {
	return metric + labelString(labels)
}

// labelString prints labels as {k="v",...} in key order, "" for none.
func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(labels[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// formatFloat prints a number briefly.
func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }
