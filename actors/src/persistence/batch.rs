//! One group-commit transaction, written once for both backends: the
//! `batch_impl` file is included into a module per backend.

pub(crate) mod sqlite {
    use crate::store::sqlite as q;
    include!("batch_impl.rs");
}

pub(crate) mod postgres {
    use crate::store::postgres as q;
    include!("batch_impl.rs");
}
