//! `add` and `subtract`: exact for integers, IEEE floats otherwise.
//!
//! JSON numbers arrive as signed or unsigned 64-bit integers or as floats. Two integers are
//! combined in 128-bit arithmetic and the result must fit back into the 64-bit range JSON
//! numbers carry here (`-2^63 ..= 2^64-1`); anything outside is an overflow error, never a
//! wrapped or rounded value. If either operand is a float the result is a float, and a result
//! that is not finite (e.g. `1e308 + 1e308`) is an error too.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Number;

/// Arguments of `add` and `subtract`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operands {
    /// The first operand: an integer (exact, 64-bit range) or a floating-point number.
    pub a: Number,
    /// The second operand: an integer (exact, 64-bit range) or a floating-point number.
    pub b: Number,
}

/// Result of `add`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Sum {
    /// a + b. An integer when both operands are integers, otherwise a float.
    pub sum: Number,
}

/// Result of `subtract`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Difference {
    /// a - b. An integer when both operands are integers, otherwise a float.
    pub difference: Number,
}

/// Why an arithmetic result could not be given.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArithmeticError {
    #[error(
        "integer overflow: {a} {op} {b} is outside the exact integer range \
         {min}..={max}; pass floats (e.g. 1.0) for approximate arithmetic",
        min = i64::MIN,
        max = u64::MAX
    )]
    IntegerOverflow { a: Number, op: char, b: Number },
    #[error("the result of {a} {op} {b} is not a finite number")]
    NotFinite { a: Number, op: char, b: Number },
}

enum Operand {
    Integer(i128),
    Float(f64),
}

fn operand(number: &Number) -> Operand {
    if let Some(value) = number.as_i64() {
        Operand::Integer(value.into())
    } else if let Some(value) = number.as_u64() {
        Operand::Integer(value.into())
    } else {
        // Without serde_json's arbitrary_precision, every non-integer Number is an f64.
        Operand::Float(number.as_f64().unwrap_or(f64::NAN))
    }
}

fn as_float(operand: &Operand) -> f64 {
    match *operand {
        // Lossy by design: a float operand makes the whole operation approximate.
        #[allow(clippy::cast_precision_loss)]
        Operand::Integer(value) => value as f64,
        Operand::Float(value) => value,
    }
}

fn combine(
    operands: &Operands,
    op: char,
    integer: fn(i128, i128) -> i128,
    float: fn(f64, f64) -> f64,
) -> Result<Number, ArithmeticError> {
    let (a, b) = (operand(&operands.a), operand(&operands.b));
    match (&a, &b) {
        (Operand::Integer(x), Operand::Integer(y)) => {
            // Both inputs are within i64/u64, so the i128 result itself cannot overflow.
            let result = integer(*x, *y);
            i64::try_from(result)
                .map(Number::from)
                .or_else(|_| u64::try_from(result).map(Number::from))
                .map_err(|_| ArithmeticError::IntegerOverflow {
                    a: operands.a.clone(),
                    op,
                    b: operands.b.clone(),
                })
        }
        _ => Number::from_f64(float(as_float(&a), as_float(&b))).ok_or_else(|| {
            ArithmeticError::NotFinite {
                a: operands.a.clone(),
                op,
                b: operands.b.clone(),
            }
        }),
    }
}

pub fn add(operands: &Operands) -> Result<Sum, ArithmeticError> {
    combine(operands, '+', |a, b| a + b, |a, b| a + b).map(|sum| Sum { sum })
}

pub fn subtract(operands: &Operands) -> Result<Difference, ArithmeticError> {
    combine(operands, '-', |a, b| a - b, |a, b| a - b).map(|difference| Difference { difference })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn operands(a: serde_json::Value, b: serde_json::Value) -> Operands {
        serde_json::from_value(json!({ "a": a, "b": b })).unwrap()
    }

    #[test]
    fn integers_are_exact_beyond_float_precision() {
        let sum = add(&operands(json!(9_007_199_254_740_993_i64), json!(1))).unwrap();
        assert_eq!(sum.sum, Number::from(9_007_199_254_740_994_i64));
    }

    #[test]
    fn results_may_use_the_whole_unsigned_range() {
        let sum = add(&operands(json!(i64::MAX), json!(i64::MAX))).unwrap();
        assert_eq!(sum.sum, Number::from(u64::MAX - 1));
        let difference = subtract(&operands(json!(u64::MAX), json!(u64::MAX))).unwrap();
        assert_eq!(difference.difference, Number::from(0));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let error = add(&operands(json!(u64::MAX), json!(1))).unwrap_err();
        assert!(matches!(error, ArithmeticError::IntegerOverflow { .. }));
        assert!(error.to_string().contains("integer overflow"));
        let error = subtract(&operands(json!(i64::MIN), json!(1))).unwrap_err();
        assert!(matches!(error, ArithmeticError::IntegerOverflow { .. }));
    }

    #[test]
    fn a_float_operand_makes_a_float_result() {
        let sum = add(&operands(json!(2), json!(0.5))).unwrap();
        assert_eq!(sum.sum.as_f64(), Some(2.5));
        assert!(!sum.sum.is_i64());
    }

    #[test]
    fn non_finite_float_results_are_errors() {
        let error = add(&operands(json!(1e308), json!(1e308))).unwrap_err();
        assert!(matches!(error, ArithmeticError::NotFinite { .. }));
    }
}
