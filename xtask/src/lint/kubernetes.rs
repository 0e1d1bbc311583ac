//! Kubernetes manifests, checked with exactly the rendering and typed
//! schemas the Kubernetes target deploys with (`targets::kubernetes::kustomize`).
use std::path::Path;

use anyhow::Result;

pub use crate::targets::kubernetes::kustomize::{
    check_documents, check_object, render, unknown_fields,
};

pub fn check_kustomization(dir: &Path) -> Result<()> {
    render(dir).map(|_| ())
}

/// A manifest outside any kustomization (the secret template).
pub fn check_manifest_file(file: &Path) -> Result<()> {
    check_documents(file, &super::read(file)?)
}
