//! Errors of the remote (object storage) tier.

/// Errors from object storage, the remote manifest and the read cache.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// An object store request failed (network, server, credentials, missing object).
    #[error("object store: {context}: {source}")]
    Store {
        /// What was being done, with the object key.
        context: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A conditional manifest update lost to a writer with a newer leader epoch: this writer is deposed.
    #[error("manifest {key} is owned by leader_epoch={current}; this writer (leader_epoch={ours}) is fenced")]
    Fenced {
        /// The manifest object key.
        key: String,
        /// The epoch recorded by the newer writer.
        current: i32,
        /// This writer's epoch.
        ours: i32,
    },
    /// A stored object does not have the expected form.
    #[error("corrupt remote object {key}: {reason}")]
    Corrupt {
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file needed for an upload could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object store configuration is invalid.
    #[error("object store configuration: {0}")]
    Config(String),
    /// The offset is not in the offloaded part of the log.
    #[error("offset={offset} is not offloaded (remote range {range:?})")]
    NotOffloaded {
        /// The requested offset.
        offset: i64,
        /// The offloaded `[start, end)`, if any.
        range: Option<(i64, i64)>,
    },
    /// Reading a local segment or decoding records failed.
    #[error(transparent)]
    Log(#[from] crate::error::LogError),
    /// The read cache failed.
    #[error("read cache: {0}")]
    Cache(String),
}

impl RemoteError {
    /// A closure that wraps an `object_store::Error` with `context`.
    pub fn store(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> RemoteError {
        let context = context.into();
        move |source| RemoteError::Store { context, source }
    }

    /// A closure that wraps an `std::io::Error` with `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RemoteError {
        let context = context.into();
        move |source| RemoteError::Io { context, source }
    }

    /// Whether the object did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RemoteError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}
