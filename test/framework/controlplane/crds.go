package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// CRDs go through the dynamic client: the typed apiextensions clientset
// would pull k8s.io/apiextensions-apiserver, and with it apiserver-side
// dependencies, into the project's module graph.
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ReadCRDs decodes every CustomResourceDefinition in the *.yaml, *.yml and
// *.json files of dir (multi-document files included). A missing dir yields
// none.
func ReadCRDs(dir string) ([]*unstructured.Unstructured, error) {
	if dir == "" {
		return nil, nil
	}
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml", "*.json"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	var crds []*unstructured.Unstructured
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				f.Close()
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if len(obj) == 0 {
				continue
			}
			u := &unstructured.Unstructured{Object: obj}
			if u.GetKind() != "CustomResourceDefinition" {
				continue
			}
			crds = append(crds, u)
		}
		f.Close()
	}
	return crds, nil
}

func (cp *ControlPlane) installCRDs(ctx context.Context, dir string) error {
	crds, err := ReadCRDs(dir)
	if err != nil {
		return err
	}
	if len(crds) == 0 {
		return nil
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig)
	if err != nil {
		return err
	}
	client := dyn.Resource(crdGVR)
	for _, crd := range crds {
		if _, err := client.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			if !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create CRD %s: %w", crd.GetName(), err)
			}
			// A reused work dir already has it; bring it up to date.
			cur, err := client.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			crd.SetResourceVersion(cur.GetResourceVersion())
			if _, err := client.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update CRD %s: %w", crd.GetName(), err)
			}
		}
		cp.CRDs = append(cp.CRDs, crd.GetName())
	}

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	wantPaths := map[string]bool{}
	for _, crd := range crds {
		name := crd.GetName()
		var lastConds any
		err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			cur, err := client.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
			lastConds = conds
			return conditionTrue(conds, "Established") && conditionTrue(conds, "NamesAccepted"), nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established (conditions %v): %w", name, lastConds, err)
		}
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			if served, _ := vm["served"].(bool); served {
				wantPaths["apis/"+group+"/"+fmt.Sprint(vm["name"])] = true
			}
		}
	}

	// Established means the REST endpoint is served; kubectl explain also
	// needs the schema in OpenAPI v3, which the apiserver publishes a little
	// later.
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		return err
	}
	var missing []string
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		raw, err := cs.Discovery().RESTClient().Get().AbsPath("/openapi/v3").DoRaw(ctx)
		if err != nil {
			return false, nil
		}
		var doc struct {
			Paths map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			return false, nil
		}
		missing = missing[:0]
		for p := range wantPaths {
			if _, ok := doc.Paths[p]; !ok {
				missing = append(missing, p)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("OpenAPI v3 lacks %s: %w", strings.Join(missing, ", "), err)
	}
	return nil
}

func conditionTrue(conds []any, typ string) bool {
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}
