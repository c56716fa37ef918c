package app

import (
	"context"
	"fmt"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/controller"
)

// Keys of a signing key Secret, as cosign writes them.
const (
	SigningKeyKey        = "cosign.key"
	SigningPassphraseKey = "cosign.password"
)

// ReadSigningKey reads the signing key Secret once, at startup: the key
// changes rarely, and a Secret informer would cost a watch on Secrets.
func ReadSigningKey(ctx context.Context, kube kubernetes.Interface, ref string) (controller.SigningKey, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		ns, name = os.Getenv("POD_NAMESPACE"), ref
		if ns == "" {
			return controller.SigningKey{}, fmt.Errorf("%q names no namespace and POD_NAMESPACE is unset: write <namespace>/<name>", ref)
		}
	}
	s, err := kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return controller.SigningKey{}, err
	}
	key, pass := s.Data[SigningKeyKey], s.Data[SigningPassphraseKey]
	if len(key) == 0 {
		return controller.SigningKey{}, fmt.Errorf("Secret %s/%s has no %s", ns, name, SigningKeyKey)
	}
	if pass == nil {
		// cosign allows an empty passphrase; the key is still encrypted.
		pass = []byte{}
	}
	return controller.SigningKey{Key: key, Passphrase: pass}, nil
}
