//! Conversions into [`CanoError`], as cano 0.13 made them: text and foreign errors
//! become [`CanoError::Generic`], so `?` works on them in a task.

use crate::{BoxError, CanoError, ErrorDetail};

impl From<&str> for CanoError {
    /// A [`CanoError::Generic`] with this message.
    fn from(message: &str) -> Self {
        Self::generic(message.to_owned())
    }
}

impl From<String> for CanoError {
    /// A [`CanoError::Generic`] with this message.
    fn from(message: String) -> Self {
        Self::generic(message)
    }
}

impl From<std::io::Error> for CanoError {
    /// A [`CanoError::Generic`] saying `IO error: …`, the I/O error kept as its source.
    fn from(error: std::io::Error) -> Self {
        Self::Generic(ErrorDetail::new(format!("IO error: {error}"))).with_source(error)
    }
}

impl From<BoxError> for CanoError {
    /// A [`CanoError::Generic`] with the error's text, the error kept as its source.
    fn from(error: BoxError) -> Self {
        let message = error.to_string();
        Self::Generic(ErrorDetail::new(message)).with_source(Boxed(error))
    }
}

/// A boxed error as a sized one, so it can be kept as a source.
#[derive(Debug)]
struct Boxed(BoxError);

impl std::fmt::Display for Boxed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Boxed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
