//! The names an image of the engine carries: the key label every built image holds, the key tag
//! (`<image>:key-<first 32 hex digits>`), and the tag pair a cached or built image is given. The
//! one place these are spelled.

use crate::digest::ImageKey;

/// The label every built image carries: its key, in full.
pub const KEY_LABEL: &str = "com.kodingcaravan.images.key";
/// The tag prefix of the key tag.
pub const KEY_TAG_PREFIX: &str = "key-";
/// The tag that names the last image of a service.
pub const LATEST: &str = "latest";

/// The tag derived from a key: `key-<first 32 hex digits>`.
pub fn key_tag(key: &ImageKey) -> String {
    format!("{KEY_TAG_PREFIX}{}", key.short(32))
}

/// The tags a cached or built image is given in the engine: `<image>:latest` and
/// `<image>:key-…`.
pub fn pair(image: &str, key: &ImageKey) -> [String; 2] {
    [
        format!("{image}:{LATEST}"),
        format!("{image}:{}", key_tag(key)),
    ]
}
