//! Which commands a benchmark sends, and in what proportions.
//!
//! `--cmd compute` is a mix of one; `--mix compute:80,ping:20` sends 80
//! compute requests for every 20 pings. The order is deterministic (smooth
//! weighted round-robin, as nginx balances upstreams): every window of 100
//! requests has exactly 80 computes, spread evenly rather than in runs, and
//! two runs of the same plan send the same sequence.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;

use crate::frame;

/// A command the load generator can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum BenchCommand {
    /// `ping`: the server's fastest path, no worker involved.
    Ping,
    /// `compute` with `n = --size`, run by a worker.
    Compute,
    /// `stats`.
    Stats,
    /// `health`.
    Health,
    /// `predict` with one image of `--images`, in turn.
    Predict,
    /// `predict_batch` with `--batch` images of `--images`, in turn.
    PredictBatch,
}

impl BenchCommand {
    const ALL: [BenchCommand; 6] = [
        BenchCommand::Ping,
        BenchCommand::Compute,
        BenchCommand::Stats,
        BenchCommand::Health,
        BenchCommand::Predict,
        BenchCommand::PredictBatch,
    ];

    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BenchCommand::Ping => "ping",
            BenchCommand::Compute => "compute",
            BenchCommand::Stats => "stats",
            BenchCommand::Health => "health",
            BenchCommand::Predict => "predict",
            BenchCommand::PredictBatch => "predict_batch",
        }
    }

    /// Whether the command carries images.
    pub(crate) fn needs_images(self) -> bool {
        matches!(self, BenchCommand::Predict | BenchCommand::PredictBatch)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Builds the request frame: `{"id":ID,"cmd":...,"timing":true}`, plus
    /// `"n"` for compute and the images for predictions. `timing` lets the
    /// report split latency into queue wait, service time and the rest.
    pub(crate) fn encode(self, id: u64, size: u64, images: &ImagePayloads) -> Vec<u8> {
        frame::encode_with::<std::io::Error>(|out| match self {
            BenchCommand::Compute => write!(out, r#"{{"id":{id},"cmd":"compute","n":{size},"timing":true}}"#),
            BenchCommand::Predict => {
                write!(out, r#"{{"id":{id},"cmd":"predict",{},"timing":true}}"#, images.fragment(id))
            }
            BenchCommand::PredictBatch => {
                write!(out, r#"{{"id":{id},"cmd":"predict_batch","images":["#)?;
                let first = id.wrapping_mul(images.batch as u64);
                for k in 0..images.batch as u64 {
                    let separator = if k == 0 { "" } else { "," };
                    write!(out, "{separator}{{{}}}", images.fragment(first.wrapping_add(k)))?;
                }
                write!(out, r#"],"timing":true}}"#)
            }
            other => write!(out, r#"{{"id":{id},"cmd":"{}","timing":true}}"#, other.as_str()),
        })
        .expect("writing into a Vec cannot fail")
    }
}

/// The images a prediction benchmark sends, each already base64-encoded
/// into its JSON fields, so building a request is a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImagePayloads {
    /// `"filename":"...","image_b64":"..."` per image.
    fragments: Arc<Vec<String>>,
    /// Images per `predict_batch` request (`--batch`).
    pub(crate) batch: usize,
}

/// Image files the benchmark will send, by extension.
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "gif"];
/// Largest image file the benchmark loads.
const MAX_IMAGE_FILE: u64 = 10 * 1024 * 1024;

impl ImagePayloads {
    /// Loads every image file (png, jpg, bmp, gif) directly inside `dir`, in
    /// name order.
    ///
    /// # Errors
    /// When the directory cannot be read or holds no image.
    pub(crate) fn load(dir: &Path, batch: usize) -> Result<ImagePayloads, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("--images {}: {e}", dir.display()))?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        paths.sort();
        let mut fragments = Vec::with_capacity(paths.len());
        for path in paths {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > MAX_IMAGE_FILE {
                return Err(format!("--images: {} is larger than {MAX_IMAGE_FILE} bytes", path.display()));
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("--images: {}: {e}", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            let name_json = serde_json::to_string(&name).expect("a string serializes");
            fragments.push(format!(r#""filename":{name_json},"image_b64":"{encoded}""#));
        }
        if fragments.is_empty() {
            return Err(format!("--images {}: no .png, .jpg, .bmp or .gif file there", dir.display()));
        }
        Ok(ImagePayloads { fragments: Arc::new(fragments), batch })
    }

    /// How many images there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.fragments.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.fragments.is_empty()
    }

    /// The JSON fields (`"filename":..,"image_b64":..`) of image number
    /// `index`, cycling through the set.
    pub(crate) fn predict_fields(&self, index: u64) -> &str {
        self.fragment(index)
    }

    fn fragment(&self, index: u64) -> &str {
        &self.fragments[(index % self.fragments.len() as u64) as usize]
    }
}

/// Commands with integer weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandMix {
    entries: Vec<(BenchCommand, u32)>,
}

impl CommandMix {
    /// Parses `compute` or `compute:80,ping:20`.
    ///
    /// # Errors
    /// A message naming the bad entry and the known commands.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let known = || BenchCommand::ALL.map(BenchCommand::as_str).join(", ");
        let mut entries: Vec<(BenchCommand, u32)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, weight) =
                match item.split_once(':') {
                    Some((name, weight)) => {
                        let weight =
                            weight.trim().parse::<u32>().ok().filter(|w| *w > 0).ok_or_else(|| {
                                format!("{item:?}: the weight must be a whole number above 0")
                            })?;
                        (name.trim(), weight)
                    }
                    None => (item, 1),
                };
            let command = BenchCommand::from_name(name)
                .ok_or_else(|| format!("{name:?} is not a command the benchmark can send ({})", known()))?;
            if entries.iter().any(|(c, _)| *c == command) {
                return Err(format!("{name:?} appears twice in the mix"));
            }
            entries.push((command, weight));
        }
        if entries.is_empty() {
            return Err(format!("the mix names no command ({})", known()));
        }
        Ok(CommandMix { entries })
    }

    /// Whether any compute request is sent.
    pub(crate) fn includes_compute(&self) -> bool {
        self.entries.iter().any(|(c, _)| *c == BenchCommand::Compute)
    }

    /// Whether any request carries images.
    pub(crate) fn includes_images(&self) -> bool {
        self.entries.iter().any(|(c, _)| c.needs_images())
    }

    /// Images in every request, when the mix is one image command:
    /// 1 for `predict`, `batch` for `predict_batch`; `None` otherwise (a mix
    /// of several commands carries different numbers).
    pub(crate) fn images_per_request(&self, batch: usize) -> Option<usize> {
        match self.entries.as_slice() {
            [(BenchCommand::Predict, _)] => Some(1),
            [(BenchCommand::PredictBatch, _)] => Some(batch),
            _ => None,
        }
    }

    /// A fresh deterministic sequence of commands following the weights.
    pub(crate) fn sequence(&self) -> MixSequence {
        MixSequence {
            entries: self.entries.clone(),
            current: vec![0; self.entries.len()],
            total: self.entries.iter().map(|(_, w)| i64::from(*w)).sum(),
        }
    }
}

impl fmt::Display for CommandMix {
    /// `compute` for a single command, `compute:80,ping:20` for a mix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [(command, _)] = self.entries.as_slice() {
            return f.write_str(command.as_str());
        }
        let parts: Vec<String> = self.entries.iter().map(|(c, w)| format!("{}:{w}", c.as_str())).collect();
        f.write_str(&parts.join(","))
    }
}

/// Smooth weighted round-robin over a [`CommandMix`].
#[derive(Debug, Clone)]
pub(crate) struct MixSequence {
    entries: Vec<(BenchCommand, u32)>,
    current: Vec<i64>,
    total: i64,
}

impl Iterator for MixSequence {
    type Item = BenchCommand;

    fn next(&mut self) -> Option<BenchCommand> {
        // Every entry earns its weight; the richest is chosen and pays the
        // total. Over `total` steps each entry is chosen exactly `weight` times.
        for (current, (_, weight)) in self.current.iter_mut().zip(&self.entries) {
            *current += i64::from(*weight);
        }
        let (chosen, _) =
            self.current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))?;
        self.current[chosen] -= self.total;
        Some(self.entries[chosen].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_follows_its_weights_exactly_and_evenly() {
        let mix = CommandMix::parse("compute:80, ping:20").unwrap();
        let first: Vec<_> = mix.sequence().take(100).collect();
        assert_eq!(first.iter().filter(|c| **c == BenchCommand::Compute).count(), 80);
        // Spread out: never more than 4 computes in a row for an 80/20 mix.
        let longest_run = first.split(|c| *c == BenchCommand::Ping).map(<[BenchCommand]>::len).max().unwrap();
        assert!(longest_run <= 4, "{first:?}");
        assert_eq!(mix.to_string(), "compute:80,ping:20");
    }

    #[test]
    fn a_single_command_is_a_mix_of_one() {
        let mix = CommandMix::parse("ping").unwrap();
        assert!(mix.sequence().take(10).all(|c| c == BenchCommand::Ping));
        assert_eq!(mix.to_string(), "ping");
        assert!(!mix.includes_compute());
    }

    #[test]
    fn bad_mixes_are_refused() {
        for bad in ["", "fly", "compute:0", "compute:-1", "compute:x", "ping,ping"] {
            assert!(CommandMix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_framed_json_with_timing() {
        let none = ImagePayloads::default();
        let frame = BenchCommand::Compute.encode(7, 500, &none);
        assert_eq!(&frame[4..], br#"{"id":7,"cmd":"compute","n":500,"timing":true}"#);
        assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(&BenchCommand::Ping.encode(1, 500, &none)[4..], br#"{"id":1,"cmd":"ping","timing":true}"#);
    }

    #[test]
    fn prediction_requests_cycle_through_the_images() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"AAA").unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"BBB").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let images = ImagePayloads::load(dir.path(), 3).unwrap();
        assert_eq!(images.len(), 2);
        let one: serde_json::Value =
            serde_json::from_slice(&BenchCommand::Predict.encode(1, 0, &images)[4..]).unwrap();
        assert_eq!(one["filename"], "b.jpg");
        assert_eq!(one["image_b64"], "QkJC");
        let batch: serde_json::Value =
            serde_json::from_slice(&BenchCommand::PredictBatch.encode(0, 0, &images)[4..]).unwrap();
        let names: Vec<&str> =
            batch["images"].as_array().unwrap().iter().map(|i| i["filename"].as_str().unwrap()).collect();
        assert_eq!(names, ["a.png", "b.jpg", "a.png"]);
        assert!(ImagePayloads::load(&dir.path().join("missing"), 1).is_err());
    }
}
