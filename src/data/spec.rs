//! The `--data` SPEC strings: which dataset, which split, where.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::DataError;

/// Train or test split of a dataset that has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Which data to load, as written on the command line (see [`DataSpec::from_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    FashionMnist { split: Split },
    Cifar10 { dir: PathBuf, split: Split },
    Images { dir: PathBuf },
    Npy { path: PathBuf },
}

/// The accepted spellings, for help texts and errors.
pub const DATA_SPEC_HELP: &str =
    "fashion-mnist[:train|:test], cifar10:DIR[:train|:test], images:DIR, npy:FILE";

impl FromStr for DataSpec {
    type Err = DataError;

    /// Parses `fashion-mnist`, `fashion-mnist:train`, `fashion-mnist:test`, `cifar10:DIR` (train),
    /// `cifar10:DIR:train`, `cifar10:DIR:test`, `images:DIR`, `npy:FILE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| DataError::Spec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        let nonempty = |r: Option<&str>, what: &str| -> Result<PathBuf, DataError> {
            match r {
                Some(r) if !r.is_empty() => Ok(PathBuf::from(r)),
                _ => Err(bad(&format!("{kind} needs {what} after the colon"))),
            }
        };
        match kind {
            "fashion-mnist" | "fashion_mnist" | "fmnist" => {
                let split = match rest {
                    None | Some("train") => Split::Train,
                    Some("test") => Split::Test,
                    Some(_) => return Err(bad("the fashion-mnist split is train or test")),
                };
                Ok(DataSpec::FashionMnist { split })
            }
            "cifar10" | "cifar-10" => {
                let rest = nonempty(rest, "a directory")?;
                let rest = rest.to_string_lossy().into_owned();
                let (dir, split) = if let Some(d) = rest.strip_suffix(":test") {
                    (d, Split::Test)
                } else if let Some(d) = rest.strip_suffix(":train") {
                    (d, Split::Train)
                } else {
                    (rest.as_str(), Split::Train)
                };
                if dir.is_empty() {
                    return Err(bad("cifar10 needs a directory"));
                }
                Ok(DataSpec::Cifar10 {
                    dir: PathBuf::from(dir),
                    split,
                })
            }
            "images" => Ok(DataSpec::Images {
                dir: nonempty(rest, "a directory")?,
            }),
            "npy" => Ok(DataSpec::Npy {
                path: nonempty(rest, "a file")?,
            }),
            _ => Err(bad(&format!(
                "unknown dataset kind; expected {DATA_SPEC_HELP}"
            ))),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::FashionMnist { split } => write!(f, "fashion-mnist:{split}"),
            DataSpec::Cifar10 { dir, split } => write!(f, "cifar10:{}:{split}", dir.display()),
            DataSpec::Images { dir } => write!(f, "images:{}", dir.display()),
            DataSpec::Npy { path } => write!(f, "npy:{}", path.display()),
        }
    }
}
