//! Procedural macros of cano. Use them through the `cano` facade
//! (`use cano::prelude::*`); the generated code refers to `::cano`.

mod derive;
mod impls;

use proc_macro::TokenStream;

/// Lets an `impl Task<S> for T` block (or an `impl Node<S> for T` block) use
/// `async fn`. With `state = S` (and optionally `key = K`) it also turns an inherent
/// impl block into the `Task` implementation: `run`, `run_bare`, `config` and `name`
/// become the trait's methods, any other method stays inherent.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Task)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl Node<S> for T` block use `async fn`; with `state = S` it turns an
/// inherent impl block into the `Node` implementation.
#[proc_macro_attribute]
pub fn node(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Node)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl CompensatableTask<S> for T` block use `async fn` for `run` and
/// `compensate`; with `state = S` (and optionally `key = K`) it turns an inherent impl
/// block into the `CompensatableTask` implementation (`type Output`, `run`,
/// `compensate`, `config`, `compensation_config` and `name` move into it). Re-exported
/// by the facade as `cano::saga::task`, written `#[saga::task]`.
#[proc_macro_attribute]
pub fn saga_task(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Compensatable)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl RouterTask<S> for T` block use `async fn` and makes the router a
/// `Task` too; with `state = S` it turns an inherent impl block into the implementation.
/// Written `#[task::router]` with `use cano::prelude::*`.
#[proc_macro_attribute]
pub fn router(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Router)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl PollTask<S> for T` block use `async fn` and writes the `Task` impl
/// that runs the poll loop, so the task registers with `Workflow::register`; with
/// `state = S` it turns an inherent impl block into the implementation. Written
/// `#[task::poll]`.
#[proc_macro_attribute]
pub fn poll(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Poll)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Writes the `Task` impl that runs an `impl BatchTask<S> for T` block's batch (the
/// block's `async fn`s are native ones: `BatchTask` needs no `#[async_trait]`); with
/// `state = S` it turns an inherent impl block (its `type Item` and `type ItemOutput`
/// included) into the implementation. Written `#[task::batch]`.
#[proc_macro_attribute]
pub fn batch(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Batch)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl SteppedTask<S> for T` block use `async fn` and writes the `Task` impl
/// that runs its steps in memory (for `Workflow::register`; `register_stepped` saves
/// each cursor instead); with `state = S` it turns an inherent impl block into the
/// implementation, its `type Cursor` read off `step` when not declared. Written
/// `#[task::stepped]`.
#[proc_macro_attribute]
pub fn stepped(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Stepped)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl TimerTask<S> for T` block use `async fn` and writes the `Task` impl
/// that waits and fires; with `state = S` it turns an inherent impl block into the
/// implementation. Written `#[task::timer]`.
#[proc_macro_attribute]
pub fn timer(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Timer)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl StreamTask<S> for T` block use `async fn` and writes the `Task` impl
/// that consumes the stream; with `state = S` it turns an inherent impl block (its
/// `type Item` and `type Cursor` included) into the implementation. Written
/// `#[task::stream]`.
#[proc_macro_attribute]
pub fn stream(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Stream)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl Resource for T` block use `async fn` for `setup`, `teardown` and
/// `health`.
#[proc_macro_attribute]
pub fn resource(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::Resource)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Lets an `impl CheckpointStore for T` block (the simple store: `append`, `load_run`,
/// `clear` by workflow id) use `async fn`; on an inherent impl block it writes the
/// `impl CheckpointStore for T` header too (cano 0.13's attribute).
#[proc_macro_attribute]
pub fn checkpoint_store(args: TokenStream, item: TokenStream) -> TokenStream {
    impls::expand(args.into(), item.into(), impls::Target::CheckpointStore)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Implements `Resource` with its defaults (no setup, no teardown, always healthy).
#[proc_macro_derive(Resource)]
pub fn derive_resource(item: TokenStream) -> TokenStream {
    derive::resource(item.into())
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Generates `fn from_resources(res: &Resources<K>) -> Result<Self, CanoError>` for a
/// struct whose fields are `Arc<T>`, each tagged `#[res("key")]` or
/// `#[res(KeyEnum::Variant)]`.
#[proc_macro_derive(FromResources, attributes(res))]
pub fn derive_from_resources(item: TokenStream) -> TokenStream {
    derive::from_resources(item.into())
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}
