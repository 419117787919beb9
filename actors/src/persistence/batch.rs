//! One group-commit transaction, written once for both backends: the
//! `batch_impl` file is included into a module per backend.

pub(crate) mod sqlite {
    #[allow(non_camel_case_types)]
    type q = crate::store::Queries<sqlx::Sqlite>;
    type Db = sqlx::Sqlite;
    include!("batch_impl.rs");
}

pub(crate) mod postgres {
    #[allow(non_camel_case_types)]
    type q = crate::store::Queries<sqlx::Postgres>;
    type Db = sqlx::Postgres;
    include!("batch_impl.rs");
}
