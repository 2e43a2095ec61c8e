//! How even a split of requests is: Pearson's chi-square test against
//! equal shares.

/// The chi-square statistic of `counts` against an even split, and the
/// probability of one at least as large if the split were even (its
/// p-value, with `counts.len() - 1` degrees of freedom). `None` for fewer
/// than two categories or no counts.
pub fn chi_square_even(counts: &[usize]) -> Option<(f64, f64)> {
    let total: usize = counts.iter().sum();
    if counts.len() < 2 || total == 0 {
        return None;
    }
    let expected = total as f64 / counts.len() as f64;
    let statistic: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let degrees = u32::try_from(counts.len() - 1).ok()?;
    Some((statistic, upper_tail(degrees, statistic)))
}

/// P(X >= x) for X chi-square distributed with `k` degrees of freedom:
/// the regularized upper incomplete gamma function Q(k/2, x/2).
pub fn upper_tail(k: u32, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let a = f64::from(k) / 2.0;
    let x = x / 2.0;
    // ln of x^a e^-x / Gamma(a), the factor both expansions share.
    let front = (a * x.ln() - x - ln_gamma_half(k)).exp();
    if x < a + 1.0 {
        // The series for the lower function P converges fast here.
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut n = 1.0;
        while term > sum * 1e-15 && n < 10_000.0 {
            term *= x / (a + n);
            sum += term;
            n += 1.0;
        }
        (1.0 - front * sum).clamp(0.0, 1.0)
    } else {
        // The continued fraction for Q, evaluated by the modified Lentz
        // method.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let i = f64::from(i);
            let an = -i * (i - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let step = d * c;
            h *= step;
            if (step - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (front * h).clamp(0.0, 1.0)
    }
}

/// ln Gamma(k/2), from Gamma(1/2) = sqrt(pi), Gamma(1) = 1 and
/// Gamma(a + 1) = a Gamma(a).
fn ln_gamma_half(k: u32) -> f64 {
    let (mut a, mut ln) = if k % 2 == 0 {
        (1.0, 0.0)
    } else {
        (0.5, 0.5 * std::f64::consts::PI.ln())
    };
    while a < f64::from(k) / 2.0 {
        ln += a.ln();
        a += 1.0;
    }
    ln
}

#[cfg(test)]
mod test {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn upper_tail_matches_known_values() {
        // Two degrees of freedom: exactly e^(-x/2).
        for x in [0.5, 2.0, 7.0, 30.0] {
            assert!(close(upper_tail(2, x), (-x / 2.0f64).exp()), "{x}");
        }
        // The 5 % and 1 % critical values of the tables.
        assert!(close(upper_tail(1, 3.841_459), 0.05));
        assert!(close(upper_tail(5, 11.070_498), 0.05));
        assert!(close(upper_tail(5, 15.086_272), 0.01));
        assert!(close(upper_tail(1, 6.634_897), 0.01));
        assert_eq!(upper_tail(3, 0.0), 1.0);
    }

    #[test]
    fn an_even_split_passes_and_a_lopsided_one_does_not() {
        let (statistic, p) = chi_square_even(&[40, 40, 40]).unwrap();
        assert_eq!(statistic, 0.0);
        assert!(close(p, 1.0));
        let (_, p) = chi_square_even(&[26, 14, 20]).unwrap();
        assert!(p > 0.05, "{p}");
        let (_, p) = chi_square_even(&[80, 20, 20]).unwrap();
        assert!(p < 1e-6, "{p}");
        assert_eq!(chi_square_even(&[5]), None);
        assert_eq!(chi_square_even(&[0, 0]), None);
    }
}
