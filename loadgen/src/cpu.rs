//! CPU time of a process from `/proc/PID/stat` (user + system, all threads), read
//! before and after the measured window: the server's (`--server-pid`) gives CPU per
//! operation, a cost that throughput alone hides on a shared machine; our own shows
//! whether the generator was near its limit.

use std::time::Duration;

/// The clock ticks per second of `/proc` times (`sysconf(_SC_CLK_TCK)`, 100 almost
/// everywhere).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf takes no pointers and has no side effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime, in clock ticks, from the text of a `stat` file.
///
/// The second field (the command name) is in parentheses and may itself hold spaces
/// and parentheses, so the fields are counted from the *last* `)`: after it come field
/// 3 (state) onwards, and utime and stime are fields 14 and 15.
pub fn parse_stat_ticks(stat: &str) -> Result<u64, String> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("no ')' after the command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let text = fields
            .get(n - 3)
            .ok_or_else(|| format!("{} fields, no field {n}", fields.len() + 2))?;
        text.parse().map_err(|e| format!("field {n} {text:?}: {e}"))
    };
    Ok(field(14)? + field(15)?)
}

/// CPU time used so far by process `pid` (`None`: this process).
pub fn cpu_time(pid: Option<u32>) -> Result<Duration, String> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let ticks = parse_stat_ticks(&stat).map_err(|e| format!("{path}: {e}"))?;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_second()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_even_with_odd_command_names() {
        let stat =
            "4242 (amp d) (x)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 350 25 0 0 20 0 3 0 12345 0 0";
        assert_eq!(parse_stat_ticks(stat).unwrap(), 375);
        assert!(parse_stat_ticks("4242 (x) S 1 2")
            .unwrap_err()
            .contains("no field 14"));
        assert!(parse_stat_ticks("nothing").is_err());
    }

    #[test]
    fn reads_our_own_cpu_time() {
        // Burn a little CPU so the count is not always zero ticks; only check it reads.
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_time(None).is_ok());
        assert!(cpu_time(Some(u32::MAX)).is_err());
    }
}
