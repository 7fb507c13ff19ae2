package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// results are the samples the scenarios take (times, rates, peak RSS) and their notes,
// which report turns into tables.
type results struct {
	mu       sync.Mutex
	times    map[string]map[string][]time.Duration // slot -> key -> samples
	rates    map[string]map[string]float64
	rss      map[string]map[string][]int64
	pairOf   map[string]string // scenario key -> key of the VERSION samples taken alongside
	pairs    []string          // those VERSION keys, in the order first used
	rssFloor int64
	notes    []string
	failures []string
}

func newResults() *results {
	return &results{
		times:  map[string]map[string][]time.Duration{},
		rates:  map[string]map[string]float64{},
		rss:    map[string]map[string][]int64{},
		pairOf: map[string]string{},
	}
}

func (r *results) setPair(key, pair string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pairOf[key] = pair
	if !slices.Contains(r.pairs, pair) {
		r.pairs = append(r.pairs, pair)
	}
}

// versionFor is the VERSION baseline of a scenario for slot: the median of the VERSION calls
// timed alongside it.
func (r *results) versionFor(slot, key string) (stat, bool) {
	pair := r.pairOf[key]
	if pair == "" {
		pair = "version"
	}
	return r.stat(slot, pair)
}

func (r *results) addTime(slot, key string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.times[slot] == nil {
		r.times[slot] = map[string][]time.Duration{}
	}
	r.times[slot][key] = append(r.times[slot][key], d)
}

func (r *results) setRate(slot, key string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rates[slot] == nil {
		r.rates[slot] = map[string]float64{}
	}
	r.rates[slot][key] = v
}

func (r *results) addRSS(slot, key string, kib, floor int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rss[slot] == nil {
		r.rss[slot] = map[string][]int64{}
	}
	r.rss[slot][key] = append(r.rss[slot][key], kib)
	r.rssFloor = max(r.rssFloor, floor)
}

func (r *results) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// stat is a median and p90 in milliseconds over n samples.
type stat struct {
	med, p90 float64
	n        int
}

func (r *results) stat(slot, key string) (stat, bool) {
	ds := r.times[slot][key]
	if len(ds) == 0 {
		return stat{}, false
	}
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = ms(d)
	}
	return stat{median(xs), p90(xs), len(xs)}, true
}

func (r *results) rate(slot, key string) (float64, bool) {
	v, ok := r.rates[slot][key]
	return v, ok
}

func (r *results) rssMedian(slot, key string) (float64, bool) {
	vs := r.rss[slot][key]
	if len(vs) == 0 {
		return 0, false
	}
	xs := make([]float64, len(vs))
	for i, v := range vs {
		xs[i] = float64(v)
	}
	return median(xs), true
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// p90 is the nearest-rank 90th percentile.
func p90(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	k := (9*len(s) + 9) / 10 // ceil(0.9 n)
	return s[max(k, 1)-1]
}
