package integration

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containers/image/v5/signature/sigstore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
)

// artifacts/deploy/with-signing-key as an administrator applies it: the
// Deployment names the key Secret, and the controller's service account,
// with the shipped RBAC, reads that Secret in the layout hack/signing-key
// and cosign write.
func TestDeploySigningKey(t *testing.T) {
	applyDeploy(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(deployDir(t), "with-signing-key")
	const ref = deployNamespace + "/imagespec-signing-key"
	var dep *appsv1.Deployment
	for _, u := range decodeManifests(t, kustomize(t, dir)) {
		if u.GetKind() == "Deployment" {
			dep = typedFrom[appsv1.Deployment](t, u.Object)
		}
	}
	if dep == nil || !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--signing-key-secret="+ref) {
		t.Fatalf("with-signing-key: the Deployment does not name %s", ref)
	}

	passphrase := []byte("integration")
	keys, err := sigstore.GenerateKeyPair(passphrase)
	if err != nil {
		t.Fatal(err)
	}
	_, admin := clients(t)
	for name, data := range map[string]map[string][]byte{
		"imagespec-signing-key": {app.SigningKeyKey: keys.PrivateKey, app.SigningPassphraseKey: passphrase, "cosign.pub": keys.PublicKey},
		"not-a-signing-key":     {"token": []byte("other")},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: deployNamespace, Name: name}, Data: data}
		if _, err := admin.CoreV1().Secrets(deployNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	sa, err := kubernetes.NewForConfig(userConfig(t, deployUser))
	if err != nil {
		t.Fatal(err)
	}
	key, err := app.ReadSigningKey(ctx, sa, ref)
	if err != nil {
		t.Fatalf("reading %s as the controller: %v", ref, err)
	}
	if _, err := supplychain.Fingerprint(key.Key, key.Passphrase); err != nil {
		t.Errorf("the key read is not usable: %v", err)
	}
	// A Secret without a key says so, naming the key it lacks.
	if _, err := app.ReadSigningKey(ctx, sa, deployNamespace+"/not-a-signing-key"); err == nil || !strings.Contains(err.Error(), app.SigningKeyKey) {
		t.Errorf("a Secret without %s: %v", app.SigningKeyKey, err)
	}
}
