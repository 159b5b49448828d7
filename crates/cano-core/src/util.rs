//! Small helpers shared by the modules of this crate.

/// The type's name without its module path: `FetchTask` rather than
/// `my_app::tasks::FetchTask`; generic arguments are shortened the same way.
pub fn short_type_name<T: ?Sized>() -> &'static str {
    shorten(std::any::type_name::<T>())
}

/// [`short_type_name`] of a full type name, for code that kept the full name (cheap to
/// take) and shortens it only when it has to show it.
pub(crate) fn shorten(full: &'static str) -> &'static str {
    // Plain paths (the common case: every task registered) shorten to the suffix after
    // the last `:`, found by one backward scan of the bytes. (A substring search costs
    // several hundred instructions a call, which was a fifth of building a workflow.)
    let bytes = full.as_bytes();
    let mut end = bytes.len();
    while end > 0 {
        match bytes[end - 1] {
            b':' => return &full[end..],
            // Not a plain path: generic, a tuple, an array, a reference...
            b'<' | b'>' | b'(' | b')' | b'[' | b']' | b',' | b' ' | b'&' | b';' | b'*' => break,
            _ => end -= 1,
        }
    }
    if end == 0 {
        return full;
    }
    if !full.contains('<') {
        return full.rsplit("::").next().unwrap_or(full);
    }
    shorten_generic(full)
}

fn shorten_generic(full: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // Generic names are shortened once and cached, so the result can be `'static`.
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(full).or_insert_with(|| {
        let mut out = String::with_capacity(full.len());
        let mut segment = String::new();
        for c in full.chars() {
            if c.is_alphanumeric() || c == '_' || c == ':' {
                segment.push(c);
            } else {
                out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
                segment.clear();
                out.push(c);
            }
        }
        out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
        Box::leak(out.into_boxed_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    struct Wrapper<T>(T);

    #[test]
    fn strips_module_paths() {
        assert_eq!(short_type_name::<Plain>(), "Plain");
        assert_eq!(short_type_name::<Wrapper<Plain>>(), "Wrapper<Plain>");
        assert_eq!(
            short_type_name::<Vec<Option<String>>>(),
            "Vec<Option<String>>"
        );
        assert_eq!(short_type_name::<u32>(), "u32");
        assert_eq!(short_type_name::<&Plain>(), "Plain");
        assert_eq!(short_type_name::<(Plain, u8)>(), "Plain, u8)");
    }

    #[test]
    fn the_scan_agrees_with_splitting_on_the_path_separator() {
        for name in [
            "a::b::Task",
            "Task",
            "crate::m::{{closure}}",
            "x::Y_z9",
            "",
            "::Leading",
        ] {
            let expected = name.rsplit("::").next().unwrap_or(name);
            assert_eq!(shorten(name), expected, "{name:?}");
        }
        assert_eq!(shorten("a::Wrapper<b::Inner>"), "Wrapper<Inner>");
    }
}
