package arch_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/bulwarkmesh/bulwark"

type pkg struct {
	ImportPath string
	Dir        string
	Name       string
	GoFiles    []string
	Deps       []string
	Imports    []string
}

// listPackages runs `go list -json` over the module.
func listPackages(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func parse(t *testing.T, p pkg, file string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, file), nil, parser.ParseComments)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	return f
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		found := false
		for _, f := range p.GoFiles {
			if file := parse(t, p, f); file.Doc != nil && strings.HasPrefix(file.Doc.Text(), "Package "+p.Name) || p.Name == "main" && file.Doc != nil {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("package %s has no doc comment starting %q", p.ImportPath, "Package "+p.Name)
		}
	}
}

func TestProxyDoesNotLinkControlPlane(t *testing.T) {
	forbidden := []string{
		module + "/internal/store",
		module + "/internal/ca",
		module + "/internal/keymanager",
		module + "/internal/control",
		module + "/internal/admin",
		module + "/internal/registry",
		module + "/internal/resource",
		module + "/internal/push",
		module + "/internal/attest/jointoken",
		"go.etcd.io/bbolt",
	}
	for _, p := range listPackages(t, "./internal/sidecar", "./internal/gateway", "./internal/proxy", "./internal/svid/...", "./internal/mtls") {
		for _, dep := range p.Deps {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s depends on %s: proxy packages must not link control-plane code", p.ImportPath, dep)
				}
			}
		}
	}
}

func TestNoProcessExitOutsideCmd(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		if strings.HasPrefix(p.ImportPath, module+"/cmd/") {
			continue
		}
		for _, f := range p.GoFiles {
			ast.Inspect(parse(t, p, f), func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				x, ok := sel.X.(*ast.Ident)
				if !ok {
					return true
				}
				if x.Name == "os" && sel.Sel.Name == "Exit" || x.Name == "log" && strings.HasPrefix(sel.Sel.Name, "Fatal") {
					t.Errorf("%s/%s calls %s.%s: only cmd/ may end the process; return an error", p.ImportPath, f, x.Name, sel.Sel.Name)
				}
				return true
			})
		}
	}
}

func TestProductionCodeDoesNotImportTesting(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		// Contract suites (storetest, keymanagertest, ...) exist to be
		// imported by tests.
		if strings.HasSuffix(p.Name, "test") {
			continue
		}
		if slices.Contains(p.Imports, "testing") {
			t.Errorf("%s imports testing in non-test code", p.ImportPath)
		}
	}
}
