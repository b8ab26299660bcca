//! Delta debugging (Zeller's ddmin) over a list of items: the smallest subset found that still
//! makes `fails` true. The caller maps items to plan elements (fault events, operations).

/// Reduces `items` to a 1-minimal failing subset: removing any single remaining item makes
/// `fails` false. `fails(items)` must hold on entry; `budget` bounds the number of tests run.
pub fn ddmin<T: Clone>(
    items: Vec<T>,
    budget: usize,
    mut fails: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
    let mut cur = items;
    let mut n = 2usize;
    let mut tests = 0;
    while cur.len() >= 2 && tests < budget {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..cur.len()).step_by(chunk) {
            if tests >= budget {
                break;
            }
            let end = (start + chunk).min(cur.len());
            let complement: Vec<T> = cur[..start].iter().chain(&cur[end..]).cloned().collect();
            tests += 1;
            if fails(&complement) {
                cur = complement;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (2 * n).min(cur.len());
        }
    }
    if cur.len() == 1 && tests < budget && fails(&[]) {
        cur.clear();
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_failing_pair() {
        let items: Vec<u32> = (0..100).collect();
        let out = ddmin(items, 10_000, |s| s.contains(&17) && s.contains(&80));
        assert_eq!(out, vec![17, 80]);
    }

    #[test]
    fn empty_when_failure_needs_nothing() {
        assert!(ddmin(vec![1, 2, 3], 100, |_| true).is_empty());
    }
}
