// Package metricstest checks the Prometheus output of `local-ipam usage --format
// prometheus` in the exec-level tests: promtool's own checks (check metrics, test rules)
// and the samples read back with the Prometheus text parser.
package metricstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Promtool is promtool's path; the test fails without it (.ci/run installs it).
func Promtool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): apt-get install prometheus (.ci/run does)", err)
	}
	return p
}

// Check runs `promtool check metrics` on text, which must pass without a finding.
func Check(t testing.TB, text string) {
	t.Helper()
	cmd := exec.Command(Promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v: %s\non:\n%s", err, out, text)
	}
}

// Sample is one series and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Series is the sample's series in PromQL's form: name{label="value",...}, labels sorted.
func (s Sample) Series() string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, s.Labels[k])
	}
	return s.Name + "{" + strings.Join(parts, ",") + "}"
}

// Parse reads the text format with Prometheus' own parser; every metric must be a gauge.
func Parse(t testing.TB, text string) []Sample {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("cannot parse the metrics: %v\n%s", err, text)
	}
	var out []Sample
	for name, mf := range mfs {
		if mf.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s is a %s, want a gauge", name, mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			s := Sample{Name: name, Labels: map[string]string{}, Value: m.GetGauge().GetValue()}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Series() < out[j].Series() })
	return out
}

// Find returns the samples of name whose labels include want.
func Find(samples []Sample, name string, want map[string]string) []Sample {
	var out []Sample
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && s.Labels[k] == v
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// Alert is an alert promtool must see firing at an evaluation time.
type Alert struct {
	Labels      map[string]string `json:"exp_labels"`
	Annotations map[string]string `json:"exp_annotations,omitempty"`
}

// RulesCase is one alert rule's expectation: at EvalTime (a duration such as "10m"),
// exactly Alerts fire.
type RulesCase struct {
	EvalTime  string  `json:"eval_time"`
	AlertName string  `json:"alertname"`
	Alerts    []Alert `json:"exp_alerts"`
}

// TestRules runs `promtool test rules`: the rules file (YAML) evaluated every minute over
// the samples, each held at its value for minutes minutes, must fire exactly as cases say.
func TestRules(t testing.TB, rules string, samples []Sample, minutes int, cases []RulesCase) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	type series struct {
		Series string `json:"series"`
		Values string `json:"values"`
	}
	var in []series
	for _, s := range samples {
		v := fmt.Sprint(s.Value)
		in = append(in, series{s.Series(), strings.TrimSpace(strings.Repeat(v+" ", minutes+1))})
	}
	// JSON is YAML: promtool reads it as its test file.
	test, err := json.MarshalIndent(map[string]any{
		"rule_files":          []string{"rules.yml"},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":        "1m",
			"input_series":    in,
			"alert_rule_test": cases,
		}},
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "test.yml")
	if err := os.WriteFile(file, test, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Promtool(t), "test", "rules", file)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s\nrules:\n%s\ntest:\n%s", err, out, rules, test)
	}
}

// RulesFromDoc returns the YAML block of the Markdown file doc whose first line is
// "# <name>": the rules the documentation gives are the rules the tests run.
func RulesFromDoc(t testing.TB, doc, name string) string {
	t.Helper()
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\n# "+name+"\n")
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatalf("%s has no ```yaml block starting with # %s", doc, name)
	}
	return "# " + name + "\n" + block
}
