//! The valence/arousal model: its manifest, loading with checks, and inference through ONNX
//! Runtime. Model constants live here.
//!
//! Thread: worker / command line

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::feel::features::{CONTEXT_LEN, FEATURE_NAMES, FEATURE_SPEC_VERSION};
use crate::runtime::{session_from_bytes, sha256_hex};

pub const MODEL_FILE: &str = "emotion_va.onnx";
pub const MANIFEST_FILE: &str = "emotion_va.json";
pub const INPUT_NAME: &str = "features";
pub const OUTPUT_NAME: &str = "va";
/// Folder that overrides the models built into the binary.
pub const ENV_MODEL_DIR: &str = "MOODFADER_MODEL_DIR";

/// The committed model, built into every binary.
pub const EMBEDDED_MODEL: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/emotion_va.onnx"));
pub const EMBEDDED_MANIFEST: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/emotion_va.json"));

/// The parts of `emotion_va.json` the loader checks.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub version: serde_json::Value,
    pub feature_spec_version: serde_json::Value,
    pub features: Vec<String>,
    pub sha256: String,
    #[serde(default)]
    pub metrics: serde_json::Value,
}

/// Where a model came from, for status lines.
#[derive(Debug, Clone)]
pub enum ModelOrigin {
    Embedded,
    File(PathBuf),
}

/// A loaded valence/arousal model.
pub struct EmotionModel {
    session: ort::session::Session,
    pub manifest: Manifest,
    pub origin: ModelOrigin,
}

impl std::fmt::Debug for EmotionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmotionModel").field("manifest", &self.manifest).field("origin", &self.origin).finish()
    }
}

impl EmotionModel {
    /// Loads from `MOODFADER_MODEL_DIR` when set, else the embedded model. ONNX Runtime must be
    /// loaded first ([`crate::runtime::ensure_runtime`]).
    pub fn load_default() -> Result<Self> {
        match std::env::var_os(ENV_MODEL_DIR).filter(|v| !v.is_empty()) {
            Some(dir) => Self::load_dir(Path::new(&dir)),
            None => Self::from_bytes(EMBEDDED_MODEL, EMBEDDED_MANIFEST, ModelOrigin::Embedded),
        }
    }

    /// Loads `emotion_va.onnx` and `emotion_va.json` from a folder.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let model_path = dir.join(MODEL_FILE);
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&model_path)
            .with_context(|| format!("emotion model {} is missing or unreadable", model_path.display()))?;
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("emotion model manifest {} is missing or unreadable", manifest_path.display()))?;
        Self::from_bytes(&bytes, &manifest, ModelOrigin::File(model_path.clone()))
            .with_context(|| format!("emotion model {} cannot be used", model_path.display()))
    }

    /// Checks the manifest against the bytes and this build's features, then opens a session.
    pub fn from_bytes(bytes: &[u8], manifest_json: &str, origin: ModelOrigin) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_str(manifest_json).map_err(|e| anyhow!("manifest is not valid: {e}"))?;
        let sha = sha256_hex(bytes);
        if !sha.eq_ignore_ascii_case(&manifest.sha256) {
            bail!("model file is corrupt: sha256 {sha} does not match the manifest's {}", manifest.sha256);
        }
        if manifest.feature_spec_version.as_u64() != Some(FEATURE_SPEC_VERSION as u64) {
            bail!(
                "model was trained on feature spec {} but this build computes spec {FEATURE_SPEC_VERSION}",
                manifest.feature_spec_version
            );
        }
        if manifest.features.iter().map(String::as_str).ne(FEATURE_NAMES.iter().copied()) {
            bail!("model's feature list does not match this build's features");
        }
        let session = session_from_bytes(bytes).map_err(|e| anyhow!("ONNX Runtime rejects the model: {e}"))?;
        let mut model = Self { session, manifest, origin };
        // One probe run proves the shapes before the model is declared ready.
        let probe = model.predict(&[[0.0; CONTEXT_LEN]]).context("model does not run on a probe input")?;
        if probe.len() != 1 {
            bail!("model returned {} rows for 1 input", probe.len());
        }
        Ok(model)
    }

    /// Valence and arousal for each context vector, each clamped to [-1, 1] (NaN becomes 0).
    pub fn predict(&mut self, inputs: &[[f32; CONTEXT_LEN]]) -> Result<Vec<(f32, f32)>> {
        let mut out = Vec::with_capacity(inputs.len());
        self.predict_into(inputs, &mut out)?;
        Ok(out)
    }

    /// Like [`predict`](Self::predict), appending into `out` (reuse it to avoid allocation).
    pub fn predict_into(&mut self, inputs: &[[f32; CONTEXT_LEN]], out: &mut Vec<(f32, f32)>) -> Result<()> {
        out.clear();
        if inputs.is_empty() {
            return Ok(());
        }
        let flat: &[f32] = inputs.as_flattened();
        let tensor = ort::value::TensorRef::from_array_view(([inputs.len(), CONTEXT_LEN], flat))
            .map_err(|e| anyhow!("{e}"))?;
        let outputs = self.session.run(ort::inputs![INPUT_NAME => tensor]).map_err(|e| anyhow!("{e}"))?;
        let (shape, data) = outputs[OUTPUT_NAME].try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
        if shape.len() != 2 || shape[1] != 2 || shape[0] as usize != inputs.len() {
            bail!("model output has shape {shape:?}, expected [{}, 2]", inputs.len());
        }
        let clean = |x: f32| if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 };
        out.extend(data.chunks_exact(2).map(|c| (clean(c[0]), clean(c[1]))));
        Ok(())
    }
}
