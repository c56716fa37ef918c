package controller

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/config"
)

// pushSecretName is what jobs reference in spec.pushSecret; empty when the
// registry takes anonymous pushes.
func (c *Controller) pushSecretName() string {
	if c.opts.ExistingPushSecret || c.opts.Registry.HasCredentials() {
		return c.opts.PushSecretName
	}
	return ""
}

// pushSecretNamespace is where the push Secret of a job in namespace is.
func (c *Controller) pushSecretNamespace(namespace string) string {
	if c.opts.PushSecretNamespace != "" {
		return c.opts.PushSecretNamespace
	}
	return namespace
}

func (c *Controller) managesPushSecret() bool {
	return !c.opts.ExistingPushSecret && c.opts.Registry.HasCredentials()
}

func (c *Controller) pushSecretData() ([]byte, error) {
	r := c.opts.Registry
	return config.DockerConfigJSON(r.Host, r.Username, r.Password)
}

// ensurePushSecret writes the registry credentials into the namespace's
// push Secret when it is missing or stale. Credentials live only in the
// Secret's data: not in events, status, logs or errors.
//
// Without a Secret informer (one push Secret in the build namespace) the
// Secret is read at most once per Options.PushSecretRecheck: a read per
// build made a fan-out of hundreds of builds read the same Secret hundreds
// of times. A Secret someone changed or deleted is restored by the first
// build after that.
func (c *Controller) ensurePushSecret(ctx context.Context, namespace string) error {
	if !c.managesPushSecret() {
		return nil
	}
	key := cache.ObjectName{Namespace: namespace, Name: c.opts.PushSecretName}
	if c.secretLister == nil {
		if at, ok := c.pushSecretChecked.get(key); ok && c.now().Sub(at) < c.opts.PushSecretRecheck {
			return nil
		}
	}
	err := c.writePushSecret(ctx, namespace)
	if err == nil {
		c.pushSecretChecked.set(key, c.now())
	}
	return err
}

func (c *Controller) writePushSecret(ctx context.Context, namespace string) error {
	data, err := c.pushSecretData()
	if err != nil {
		return err
	}
	var existing *corev1.Secret
	if c.secretLister != nil {
		existing, err = c.secretLister.Secrets(namespace).Get(c.opts.PushSecretName)
	} else {
		existing, err = c.kube.CoreV1().Secrets(namespace).Get(ctx, c.opts.PushSecretName, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:      c.opts.PushSecretName,
				Namespace: namespace,
				Labels:    map[string]string{ManagedByLabel: ComponentName},
			},
			Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: data},
		}
		_, err = c.kube.CoreV1().Secrets(namespace).Create(ctx, secret, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Either our informer lags, or a Secret of that name exists
			// without our label: never overwrite a user's Secret.
			current, getErr := c.kube.CoreV1().Secrets(namespace).Get(ctx, c.opts.PushSecretName, metav1.GetOptions{})
			if getErr != nil {
				return getErr
			}
			if current.Labels[ManagedByLabel] != ComponentName {
				return fmt.Errorf("Secret %s/%s exists and is not managed by %s; delete it or name another with --push-secret-name", namespace, c.opts.PushSecretName, ComponentName)
			}
			return c.updatePushSecret(ctx, current, data)
		}
		if err == nil {
			klog.FromContext(ctx).Info("Created push Secret", "namespace", namespace, "secret", c.opts.PushSecretName)
		}
		return err
	}
	if err != nil {
		return err
	}
	return c.updatePushSecret(ctx, existing, data)
}

func (c *Controller) updatePushSecret(ctx context.Context, existing *corev1.Secret, data []byte) error {
	if existing.Type == corev1.SecretTypeDockerConfigJson && bytes.Equal(existing.Data[corev1.DockerConfigJsonKey], data) {
		return nil
	}
	if existing.Type != corev1.SecretTypeDockerConfigJson {
		// The type of a Secret is immutable.
		return fmt.Errorf("Secret %s/%s has type %s, want %s; delete it so it is recreated", existing.Namespace, existing.Name, existing.Type, corev1.SecretTypeDockerConfigJson)
	}
	updated := existing.DeepCopy()
	updated.Data = map[string][]byte{corev1.DockerConfigJsonKey: data}
	if _, err := c.kube.CoreV1().Secrets(existing.Namespace).Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Updated push Secret with the configured credentials", "namespace", existing.Namespace, "secret", existing.Name)
	return nil
}

// refreshPushSecrets brings every managed push Secret up to date, so a
// password changed in the settings reaches all namespaces when the
// controller restarts, not only those that build next.
func (c *Controller) refreshPushSecrets(ctx context.Context) error {
	if !c.managesPushSecret() {
		return nil
	}
	if c.opts.PushSecretNamespace != "" {
		return c.ensurePushSecret(ctx, c.opts.PushSecretNamespace)
	}
	data, err := c.pushSecretData()
	if err != nil {
		return err
	}
	secrets, err := c.secretLister.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, s := range secrets {
		if s.Name != c.opts.PushSecretName {
			continue
		}
		if err := c.updatePushSecret(ctx, s, data); err != nil {
			return err
		}
	}
	return nil
}
