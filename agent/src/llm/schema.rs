//! Normalises MCP tool input schemas into what model APIs accept.
//!
//! MCP servers publish JSON Schema as produced by their tooling; Rust servers
//! use `schemars`, which emits `$schema`, puts shared types under `$defs` and
//! points at them with `{"$ref": "#/$defs/Name"}`. Model APIs want a single
//! self-contained schema, so [`model_schema`] inlines local references and
//! drops the bookkeeping keywords. Everything else (`oneOf`, `anyOf`,
//! `additionalProperties`, `enum`, descriptions, ...) is kept as it is.

use serde_json::{Map, Value};

/// How many `$ref`s may be expanded inside one another. Real tool schemas need
/// a handful; the bound stops pathological schemas from blowing up.
const MAX_REF_DEPTH: usize = 16;

/// Keywords removed from every schema object once references are inlined.
const BOOKKEEPING_KEYWORDS: [&str; 3] = ["$schema", "$defs", "definitions"];

/// Keywords whose values are maps from names to schemas (so their keys are
/// names, never keywords).
const SCHEMA_MAP_KEYWORDS: [&str; 3] = ["properties", "patternProperties", "dependentSchemas"];

/// Keywords whose values are instance data, copied verbatim.
const DATA_KEYWORDS: [&str; 4] = ["const", "default", "enum", "examples"];

/// Returns `schema` made self-contained for a model API.
///
/// * Local references (`#`, `#/$defs/...`, `#/definitions/...`, or any other
///   JSON pointer into `schema`) are replaced by the schema they point to.
///   Keywords next to the `$ref` (typically `description`) are kept and win
///   over the referenced schema's own.
/// * A reference that is recursive, nested deeper than an internal bound, or
///   cannot be resolved (missing target, or not a local `#...` reference) is
///   replaced by its sibling keywords alone, i.e. a permissive schema, so the
///   model API never sees a `$ref` it cannot follow. Recursive types are thus
///   unrolled once.
/// * `$schema`, `$defs` and `definitions` are removed.
/// * Property names are never mistaken for keywords, and `enum` / `const` /
///   `default` / `examples` values are copied untouched.
#[must_use]
pub fn model_schema(schema: &Value) -> Value {
    Inliner {
        root: schema,
        expanding: Vec::new(),
    }
    .schema(schema)
}

/// Walks a schema, remembering which references are being expanded.
struct Inliner<'a> {
    root: &'a Value,
    /// JSON pointers of the references currently being expanded, outermost first.
    expanding: Vec<&'a str>,
}

impl<'a> Inliner<'a> {
    /// Inlines a value in schema position.
    fn schema(&mut self, node: &'a Value) -> Value {
        match node {
            Value::Object(keywords) => match keywords.get("$ref") {
                Some(Value::String(reference)) => self.reference(reference, keywords),
                _ => Value::Object(self.keywords(keywords)),
            },
            // Arrays of schemas (`oneOf`, `prefixItems`, ...).
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.schema(item)).collect())
            }
            // Boolean schemas and plain values (`type`, `description`, ...).
            other => other.clone(),
        }
    }

    /// Inlines every keyword of a schema object except `$ref` and the bookkeeping ones.
    fn keywords(&mut self, keywords: &'a Map<String, Value>) -> Map<String, Value> {
        let mut inlined = Map::new();
        for (keyword, value) in keywords {
            let keyword_str = keyword.as_str();
            if keyword_str == "$ref" || BOOKKEEPING_KEYWORDS.contains(&keyword_str) {
                continue;
            }
            let value = if DATA_KEYWORDS.contains(&keyword_str) {
                value.clone()
            } else if SCHEMA_MAP_KEYWORDS.contains(&keyword_str) {
                self.schema_map(value)
            } else {
                self.schema(value)
            };
            inlined.insert(keyword.clone(), value);
        }
        inlined
    }

    /// Inlines a name → schema map such as `properties`.
    fn schema_map(&mut self, value: &'a Value) -> Value {
        match value {
            Value::Object(named) => Value::Object(
                named
                    .iter()
                    .map(|(name, schema)| (name.clone(), self.schema(schema)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Replaces `{"$ref": reference, ...siblings}` by the referenced schema
    /// merged with the siblings.
    fn reference(&mut self, reference: &'a str, keywords: &'a Map<String, Value>) -> Value {
        let siblings = self.keywords(keywords);
        let Some(pointer) = reference.strip_prefix('#') else {
            tracing::warn!(reference, "tool schema has a non-local $ref; dropping it");
            return Value::Object(siblings);
        };
        if self.expanding.contains(&pointer) || self.expanding.len() >= MAX_REF_DEPTH {
            // Recursive (or absurdly deep) type: stop unrolling here.
            return Value::Object(siblings);
        }
        let Some(target) = self.root.pointer(pointer) else {
            tracing::warn!(reference, "tool schema has a $ref to nothing; dropping it");
            return Value::Object(siblings);
        };

        self.expanding.push(pointer);
        let resolved = self.schema(target);
        self.expanding.pop();

        match resolved {
            Value::Object(mut merged) => {
                merged.extend(siblings);
                Value::Object(merged)
            }
            // A boolean target schema with no siblings stays as it is.
            other if siblings.is_empty() => other,
            _ => Value::Object(siblings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Shaped like `schemars` output for nested Rust types with an enum.
    #[test]
    fn inlines_nested_defs_inside_one_of_and_drops_bookkeeping() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "DrawArgs",
            "type": "object",
            "properties": {
                "shape": { "$ref": "#/$defs/Shape", "description": "What to draw." },
                "at": { "anyOf": [ { "$ref": "#/$defs/Point" }, { "type": "null" } ] }
            },
            "required": ["shape"],
            "additionalProperties": false,
            "$defs": {
                "Shape": {
                    "oneOf": [
                        { "type": "object", "properties": { "circle": { "$ref": "#/$defs/Circle" } },
                          "required": ["circle"], "additionalProperties": false },
                        { "type": "string", "enum": ["dot"] }
                    ]
                },
                "Circle": {
                    "type": "object",
                    "properties": { "center": { "$ref": "#/$defs/Point" }, "radius": { "type": "number" } },
                    "required": ["center", "radius"]
                },
                "Point": {
                    "type": "object",
                    "properties": { "x": { "type": "number" }, "y": { "type": "number" } },
                    "required": ["x", "y"]
                }
            }
        });

        let point = json!({
            "type": "object",
            "properties": { "x": { "type": "number" }, "y": { "type": "number" } },
            "required": ["x", "y"]
        });
        let expected = json!({
            "title": "DrawArgs",
            "type": "object",
            "properties": {
                "shape": {
                    "description": "What to draw.",
                    "oneOf": [
                        { "type": "object",
                          "properties": { "circle": {
                              "type": "object",
                              "properties": { "center": point, "radius": { "type": "number" } },
                              "required": ["center", "radius"]
                          } },
                          "required": ["circle"], "additionalProperties": false },
                        { "type": "string", "enum": ["dot"] }
                    ]
                },
                "at": { "anyOf": [ point, { "type": "null" } ] }
            },
            "required": ["shape"],
            "additionalProperties": false
        });
        assert_eq!(model_schema(&schema), expected);
    }

    #[test]
    fn supports_draft07_definitions_and_nested_def_pointers() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "a": { "$ref": "#/definitions/A" },
                "b": { "$ref": "#/definitions/A/definitions/B" }
            },
            "definitions": {
                "A": { "type": "string", "definitions": { "B": { "type": "integer" } } }
            }
        });
        assert_eq!(
            model_schema(&schema),
            json!({ "type": "object", "properties": {
                "a": { "type": "string" },
                "b": { "type": "integer" }
            } })
        );
    }

    #[test]
    fn recursive_types_are_unrolled_once_instead_of_forever() {
        let schema = json!({
            "$ref": "#/$defs/Tree",
            "$defs": { "Tree": {
                "type": "object",
                "properties": {
                    "label": { "type": "string" },
                    "children": { "type": "array", "items": { "$ref": "#/$defs/Tree" } }
                }
            } }
        });
        assert_eq!(
            model_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "label": { "type": "string" },
                    "children": { "type": "array", "items": {} }
                }
            })
        );
        // Self-reference through the root pointer terminates too.
        let root_recursive = json!({ "type": "object", "properties": { "next": { "$ref": "#" } } });
        assert_eq!(
            model_schema(&root_recursive),
            json!({ "type": "object", "properties": { "next": {
                "type": "object", "properties": { "next": {} }
            } } })
        );
    }

    #[test]
    fn property_names_and_data_are_not_treated_as_keywords() {
        let schema = json!({
            "type": "object",
            "properties": {
                "$schema": { "type": "string" },
                "$ref": { "type": "string", "default": "#/$defs/Nope" }
            },
            "default": { "$schema": "kept", "$ref": "kept" },
            "enum": [ { "$defs": 1 } ]
        });
        assert_eq!(model_schema(&schema), schema);
    }

    #[test]
    fn unresolvable_references_become_permissive() {
        let schema = json!({
            "type": "object",
            "properties": {
                "missing": { "$ref": "#/$defs/Missing", "description": "gone" },
                "remote": { "$ref": "https://example.com/schema.json" }
            }
        });
        assert_eq!(
            model_schema(&schema),
            json!({ "type": "object", "properties": {
                "missing": { "description": "gone" },
                "remote": {}
            } })
        );
    }
}
