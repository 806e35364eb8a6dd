//! Sizes in binary human units, as `ls -h`/`lvs` readers expect (1024-based, one decimal).

/// Formats `bytes` as `512 B`, `1.5 KiB`, `16.0 MiB`, `2.0 GiB`, … (binary prefixes).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // f64 is exact enough for one decimal of any u64 size.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `used / size` as a percentage with no decimals, `-` when the size is unknown (0).
pub fn percent(used: u64, size: u64) -> String {
    if size == 0 {
        "-".to_owned()
    } else {
        format!("{}%", (used as u128 * 100 / size as u128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024 / 2), "2.5 GiB");
        assert_eq!(human_size(3 << 40), "3.0 TiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn percent_rounds_down_and_handles_zero() {
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(0, 0), "-");
        assert_eq!(percent(u64::MAX, u64::MAX), "100%");
    }
}
