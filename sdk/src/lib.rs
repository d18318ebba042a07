//! # Phoenix, the STOQ SDK
//!
//! Phoenix is the only layer that knows every compiled-in backend; everything below it
//! (`stoq-core`, the backend crates) knows none of the others. Each backend is behind a
//! cargo feature of this crate (`quinn`, on by default).
//!
//! This first part holds the backend registry: pick an engine by name, or list them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use stoq_core::{Backend, Error};

/// The backend used when none is named.
pub const DEFAULT_BACKEND: &str = "quinn";

/// The names of the backends compiled into this build, default first.
// One push per cargo feature, so the vector cannot be a literal.
#[allow(unused_mut, clippy::vec_init_then_push)]
pub fn backend_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    #[cfg(feature = "quinn")]
    names.push("quinn");
    names
}

/// The backend called `name`. Fails with [`Error::Config`] naming the backends that are
/// compiled in when `name` is not one of them.
pub fn backend(name: &str) -> Result<Arc<dyn Backend>, Error> {
    match name {
        #[cfg(feature = "quinn")]
        "quinn" => Ok(Arc::new(stoq_quinn::QuinnBackend)),
        _ => Err(Error::config(
            "backend",
            format!(
                "no backend named {name:?} in this build; compiled in: {}",
                backend_names().join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_backend_resolves_to_itself() {
        for name in backend_names() {
            assert_eq!(backend(name).unwrap().name(), name);
        }
        assert!(backend_names().contains(&DEFAULT_BACKEND));
    }

    #[test]
    fn unknown_backend_is_a_config_error_listing_the_choices() {
        let err = backend("carrier-pigeon").unwrap_err();
        match err {
            Error::Config { field, reason } => {
                assert_eq!(field, "backend");
                assert!(reason.contains("carrier-pigeon") && reason.contains(DEFAULT_BACKEND));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
