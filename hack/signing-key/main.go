// Command signing-key makes a sigstore key pair for --signing-key-secret
// and prints it as a Secret manifest in cosign's layout (cosign.key,
// cosign.pub, cosign.password), with a random passphrase:
//
//	go run ./hack/signing-key | kubectl apply -f -
//	kubectl -n imagespec-system get secret imagespec-signing-key -o jsonpath='{.data.cosign\.pub}' | base64 -d > cosign.pub
//
// Keep the private key nowhere else; hand cosign.pub to whoever verifies.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/containers/image/v5/signature/sigstore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func main() {
	namespace := flag.String("namespace", "imagespec-system", "Namespace of the Secret (the controller's).")
	name := flag.String("name", "imagespec-signing-key", "Name of the Secret.")
	flag.Parse()
	if err := run(*namespace, *name); err != nil {
		fmt.Fprintln(os.Stderr, "signing-key:", err)
		os.Exit(1)
	}
}

func run(namespace, name string) error {
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	passphrase := []byte(base64.RawURLEncoding.EncodeToString(raw))
	keys, err := sigstore.GenerateKeyPair(passphrase)
	if err != nil {
		return err
	}
	secret := corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"cosign.key":      keys.PrivateKey,
			"cosign.pub":      keys.PublicKey,
			"cosign.password": passphrase,
		},
	}
	// JSON is YAML: kubectl apply -f - reads it.
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(secret)
}
