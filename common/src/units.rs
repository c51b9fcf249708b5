//! Quantities as people read them: byte sizes in binary units, and
//! durations to the unit that matters.

/// `512 B`, `1 TiB`, `100 GiB`, `1.5 GiB`: binary units, whole when exact,
/// else one decimal; a size that rounds up to 1024 of a unit is shown in
/// the next one (`1.0 MiB`, not `1024.0 KiB`).
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while unit < UNITS.len() - 1 && (value * 10.0).round() / 10.0 >= 1024.0 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `45 s`, `3 min`, `2 h 5 min`: seconds under two minutes, then whole
/// minutes, then hours and minutes.
pub fn format_duration_secs(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs.div_ceil(60)),
        _ => {
            let minutes = secs.div_ceil(60);
            format!("{} h {} min", minutes / 60, minutes % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{format_bytes, format_duration_secs};

    #[test]
    fn durations_read_to_the_unit_that_matters() {
        assert_eq!(format_duration_secs(45), "45 s");
        assert_eq!(format_duration_secs(150), "3 min");
        assert_eq!(format_duration_secs(7500), "2 h 5 min");
    }
    use crate::{GIB, TIB};

    #[test]
    fn byte_sizes_read_like_plan_sheets() {
        assert_eq!(format_bytes(1 << 40), "1 TiB");
        assert_eq!(format_bytes(100 * GIB), "100 GiB");
        assert_eq!(format_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(format_bytes(512), "512 B");
    }

    #[test]
    fn edges_of_each_unit() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(1025), "1.0 KiB");
        assert_eq!(format_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(format_bytes(1024 * 1024 - 103), "1023.9 KiB");
        assert_eq!(format_bytes(GIB - 1), "1.0 GiB");
        assert_eq!(format_bytes(1024 * TIB), "1024 TiB");
        assert_eq!(format_bytes(u64::MAX), "16777216 TiB");
    }
}
