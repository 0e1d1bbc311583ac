//! The image's files, read from `docker save` output layer by layer: what a
//! registry would serve, including files a later layer deletes (a secret
//! removed in a later layer still ships in the earlier one).
use std::io::Read;

use anyhow::{Context, Result};
use bollard::Docker;
use futures_util::TryStreamExt;

use crate::image::context::LOCKFILE_IN_IMAGE;

/// Larger files are not searched for secrets: keys and env files are small.
const MAX_TEXT_FILE: u64 = 1 << 20;

pub struct ImageFile {
    pub path: String,
    pub mode: u32,
    /// Text content of small non-binary files; None otherwise.
    pub text: Option<String>,
}

pub struct ImageContents {
    pub files: Vec<ImageFile>,
    pub layer_count: usize,
    pub lockfile: Option<String>,
}

pub async fn read(docker: &Docker, image: &str) -> Result<ImageContents> {
    let chunks: Vec<bytes::Bytes> = docker
        .export_image(image)
        .try_collect()
        .await
        .with_context(|| format!("exporting {image} to read its layers"))?;
    let archive: Vec<u8> = chunks.concat();
    parse_saved(&archive).with_context(|| format!("reading the layers of {image}"))
}

fn parse_saved(archive: &[u8]) -> Result<ImageContents> {
    let mut layers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest: Option<serde_json::Value> = None;
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        if path == "manifest.json" {
            manifest = Some(serde_json::from_reader(&mut entry)?);
        } else if path.ends_with("layer.tar") {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            layers.push((path, data));
        }
    }
    // manifest.json lists layers bottom-up; later layers win for the lockfile.
    let order: Vec<String> = manifest
        .as_ref()
        .and_then(|m| m[0]["Layers"].as_array())
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    layers.sort_by_key(|(path, _)| order.iter().position(|p| p == path).unwrap_or(usize::MAX));
    let mut contents = ImageContents {
        files: Vec::new(),
        layer_count: layers.len(),
        lockfile: None,
    };
    for (_, data) in &layers {
        for entry in tar::Archive::new(data.as_slice()).entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path()?.display().to_string();
            let mode = entry.header().mode().unwrap_or(0);
            let text = if entry.size() <= MAX_TEXT_FILE {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                let sample = &data[..data.len().min(8192)];
                (!sample.contains(&0)).then(|| String::from_utf8_lossy(&data).into_owned())
            } else {
                None
            };
            if path.trim_start_matches('/') == LOCKFILE_IN_IMAGE {
                contents.lockfile = text.clone();
            }
            contents.files.push(ImageFile { path, mode, text });
        }
    }
    Ok(contents)
}
