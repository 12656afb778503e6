//! GGUF metadata values.

/// One metadata value. The variants follow the GGUF value types (ids in comments).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// 0
    U8(u8),
    /// 1
    I8(i8),
    /// 2
    U16(u16),
    /// 3
    I16(i16),
    /// 4
    U32(u32),
    /// 5
    I32(i32),
    /// 6
    F32(f32),
    /// 7
    Bool(bool),
    /// 8
    String(String),
    /// 9
    Array(MetaArray),
    /// 10
    U64(u64),
    /// 11
    I64(i64),
    /// 12
    F64(f64),
}

/// A metadata array. Arrays are homogeneous in GGUF, so they are stored typed: a
/// 262,144-entry vocabulary is a `Vec<String>` and its scores a `Vec<f32>`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// An array of arrays (each inner array has its own element type).
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// GGUF value type ids.
pub(crate) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    pub fn name(id: u32) -> &'static str {
        match id {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            BOOL => "bool",
            STRING => "string",
            ARRAY => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
            _ => "unknown",
        }
    }
}

impl MetaValue {
    /// The GGUF value type id (0..=12).
    pub fn type_id(&self) -> u32 {
        use value_type as v;
        match self {
            MetaValue::U8(_) => v::U8,
            MetaValue::I8(_) => v::I8,
            MetaValue::U16(_) => v::U16,
            MetaValue::I16(_) => v::I16,
            MetaValue::U32(_) => v::U32,
            MetaValue::I32(_) => v::I32,
            MetaValue::F32(_) => v::F32,
            MetaValue::Bool(_) => v::BOOL,
            MetaValue::String(_) => v::STRING,
            MetaValue::Array(_) => v::ARRAY,
            MetaValue::U64(_) => v::U64,
            MetaValue::I64(_) => v::I64,
            MetaValue::F64(_) => v::F64,
        }
    }

    /// The value type's name ("u32", "string", "array", ...), for messages.
    pub fn type_name(&self) -> &'static str {
        value_type::name(self.type_id())
    }

    /// Any integer type holding a value that fits `u64` (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(x) => Some(x.into()),
            MetaValue::U16(x) => Some(x.into()),
            MetaValue::U32(x) => Some(x.into()),
            MetaValue::U64(x) => Some(x),
            MetaValue::I8(x) => u64::try_from(x).ok(),
            MetaValue::I16(x) => u64::try_from(x).ok(),
            MetaValue::I32(x) => u64::try_from(x).ok(),
            MetaValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// Any integer type holding a value that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(x) => Some(x.into()),
            MetaValue::I16(x) => Some(x.into()),
            MetaValue::I32(x) => Some(x.into()),
            MetaValue::I64(x) => Some(x),
            MetaValue::U8(x) => Some(x.into()),
            MetaValue::U16(x) => Some(x.into()),
            MetaValue::U32(x) => Some(x.into()),
            MetaValue::U64(x) => i64::try_from(x).ok(),
            _ => None,
        }
    }

    /// An f32 or f64 (rounded to f32), or an integer converted to f32.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(x) => Some(x),
            MetaValue::F64(x) => Some(x as f32),
            _ => self.as_i64().map(|x| x as f32),
        }
    }

    /// An f32 (exactly) or f64, or an integer converted to f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(x) => Some(x.into()),
            MetaValue::F64(x) => Some(x),
            _ => match self.as_i64() {
                Some(x) => Some(x as f64),
                None => self.as_u64().map(|x| x as f64),
            },
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

macro_rules! slice_accessors {
    ($( $fn:ident, $variant:ident, $t:ty; )*) => {
        $(
            #[doc = concat!("The elements, if this is an array of `", stringify!($t), "`.")]
            pub fn $fn(&self) -> Option<&[$t]> {
                match self {
                    MetaArray::$variant(v) => Some(v),
                    _ => None,
                }
            }
        )*
    };
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF value type id of the elements.
    pub fn element_type_id(&self) -> u32 {
        use value_type as v;
        match self {
            MetaArray::U8(_) => v::U8,
            MetaArray::I8(_) => v::I8,
            MetaArray::U16(_) => v::U16,
            MetaArray::I16(_) => v::I16,
            MetaArray::U32(_) => v::U32,
            MetaArray::I32(_) => v::I32,
            MetaArray::F32(_) => v::F32,
            MetaArray::Bool(_) => v::BOOL,
            MetaArray::String(_) => v::STRING,
            MetaArray::Array(_) => v::ARRAY,
            MetaArray::U64(_) => v::U64,
            MetaArray::I64(_) => v::I64,
            MetaArray::F64(_) => v::F64,
        }
    }

    /// The element type's name ("string", "f32", ...), for messages.
    pub fn element_type_name(&self) -> &'static str {
        value_type::name(self.element_type_id())
    }

    /// Element `i` as a standalone value (cloned), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<MetaValue> {
        Some(match self {
            MetaArray::U8(v) => MetaValue::U8(*v.get(i)?),
            MetaArray::I8(v) => MetaValue::I8(*v.get(i)?),
            MetaArray::U16(v) => MetaValue::U16(*v.get(i)?),
            MetaArray::I16(v) => MetaValue::I16(*v.get(i)?),
            MetaArray::U32(v) => MetaValue::U32(*v.get(i)?),
            MetaArray::I32(v) => MetaValue::I32(*v.get(i)?),
            MetaArray::F32(v) => MetaValue::F32(*v.get(i)?),
            MetaArray::Bool(v) => MetaValue::Bool(*v.get(i)?),
            MetaArray::String(v) => MetaValue::String(v.get(i)?.clone()),
            MetaArray::Array(v) => MetaValue::Array(v.get(i)?.clone()),
            MetaArray::U64(v) => MetaValue::U64(*v.get(i)?),
            MetaArray::I64(v) => MetaValue::I64(*v.get(i)?),
            MetaArray::F64(v) => MetaValue::F64(*v.get(i)?),
        })
    }

    /// The elements as standalone values (cloned).
    pub fn iter(&self) -> impl Iterator<Item = MetaValue> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    slice_accessors! {
        as_u8s, U8, u8;
        as_i8s, I8, i8;
        as_u16s, U16, u16;
        as_i16s, I16, i16;
        as_u32s, U32, u32;
        as_i32s, I32, i32;
        as_f32s, F32, f32;
        as_bools, Bool, bool;
        as_strings, String, String;
        as_arrays, Array, MetaArray;
        as_u64s, U64, u64;
        as_i64s, I64, i64;
        as_f64s, F64, f64;
    }
}
