// +k8s:deepcopy-gen=package
// +groupName=primehub.io

// Package v1alpha1 is the v1alpha1 version of the primehub.io API:
// ImageSpec (what image to build) and ImageSpecJob (one build of one
// revision of an ImageSpec).
package v1alpha1
