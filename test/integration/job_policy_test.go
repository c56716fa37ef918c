package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
)

// The shipped ValidatingAdmissionPolicy: a user allowed by RBAC to create
// and update ImageSpecJobs still cannot create one or change anything of it
// but spec.cancel; the controller's ServiceAccount can.
func TestJobPolicy(t *testing.T) {
	applyDeploy(t)
	ns := NewTestNamespace(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(SharedControlPlane(t).RESTConfig)
	// RBAC alone would let the tenant do all of it.
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "jobs"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"primehub.io"}, Resources: []string{"imagespecjobs"},
			Verbs: []string{"get", "list", "create", "update", "patch", "delete"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "jobs"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "jobs"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "tenant"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tenant := clientset.NewForConfigOrDie(userConfig(t, "tenant")).PrimehubV1alpha1().ImageSpecJobs(ns)
	ctrl := clientset.NewForConfigOrDie(userConfig(t, "system:serviceaccount:imagespec-system:imagespec-controller")).PrimehubV1alpha1().ImageSpecJobs(ns)
	job := func(name string) *v1alpha1.ImageSpecJob {
		return &v1alpha1.ImageSpecJob{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.ImageSpecJobSpec{
				BaseImage: "python:3.11-slim", TargetImage: testRepoPrefix + "/victim:latest",
				PushSecret: controller.DefaultPushSecretName,
			},
		}
	}

	// The API server loads policies asynchronously: retry until it denies.
	var denied error
	for i := 0; ; i++ {
		_, err := tenant.Create(ctx, job(fmt.Sprintf("by-tenant-%d", i)), metav1.CreateOptions{})
		if err != nil {
			denied = err
			break
		}
		if i == 100 {
			t.Fatal("the tenant still creates ImageSpecJobs after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !apierrors.IsForbidden(denied) && !apierrors.IsInvalid(denied) || !strings.Contains(denied.Error(), "created by the imagespec-controller") {
		t.Fatalf("tenant create: %v, want the policy's denial", denied)
	}

	created, err := ctrl.Create(ctx, job("by-controller"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the controller's ServiceAccount cannot create a job: %v", err)
	}
	patch := func(body string) error {
		_, err := tenant.Patch(ctx, created.Name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	for _, body := range []string{
		`{"spec":{"pushSecret":"stolen"}}`,
		`{"spec":{"pullSecret":"other"}}`,
		`{"spec":{"repoPrefix":"elsewhere.example.com"}}`,
		`{"metadata":{"annotations":{"primehub.io/base-image-digest":"sha256:00"}}}`,
	} {
		if err := patch(body); err == nil || !strings.Contains(err.Error(), "only spec.cancel") {
			t.Errorf("tenant patch %s: %v, want the policy's denial", body, err)
		}
	}
	if err := patch(`{"spec":{"targetImage":"` + testRepoPrefix + `/other:1"}}`); err == nil {
		t.Error("tenant changed spec.targetImage")
	}
	if err := patch(`{"spec":{"cancel":true}}`); err != nil {
		t.Errorf("tenant cannot cancel a job: %v", err)
	}
	if err := tenant.Delete(ctx, created.Name, metav1.DeleteOptions{}); err != nil {
		t.Errorf("tenant cannot delete a job: %v", err)
	}
}
