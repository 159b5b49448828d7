//! The attribute macros on impl blocks.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Error, ImplItem, ItemImpl, Token, Type};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Task,
    Node,
    Resource,
    Compensatable,
    Router,
    Poll,
    Batch,
    Timer,
    Stream,
    Stepped,
    CheckpointStore,
}

impl Target {
    fn trait_name(self) -> &'static str {
        match self {
            Self::Task => "Task",
            Self::Node => "Node",
            Self::Resource => "Resource",
            Self::Compensatable => "CompensatableTask",
            Self::Router => "RouterTask",
            Self::Poll => "PollTask",
            Self::Batch => "BatchTask",
            Self::Timer => "TimerTask",
            Self::Stream => "StreamTask",
            Self::Stepped => "SteppedTask",
            Self::CheckpointStore => "CheckpointStore",
        }
    }

    /// The facade module the trait lives in, for the task models.
    fn model_module(self) -> Option<&'static str> {
        match self {
            Self::Router => Some("router"),
            Self::Poll => Some("poll"),
            Self::Batch => Some("batch"),
            Self::Timer => Some("timer"),
            Self::Stream => Some("stream"),
            Self::Stepped => Some("stepped"),
            _ => None,
        }
    }

    /// The attribute as users write it, for error messages.
    fn attribute(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Node => "node",
            Self::Resource => "resource",
            Self::Compensatable => "saga::task",
            Self::Router => "task::router",
            Self::Poll => "task::poll",
            Self::Batch => "task::batch",
            Self::Timer => "task::timer",
            Self::Stream => "task::stream",
            Self::Stepped => "task::stepped",
            Self::CheckpointStore => "checkpoint_store",
        }
    }

    /// The items of the trait, which move from an inherent block into the trait impl.
    fn owns(self, item: &ImplItem) -> bool {
        let names: &[&str] = match self {
            Self::Task => &["run", "run_bare", "config", "name"],
            Self::Node => &["prep", "exec", "post", "config", "name"],
            Self::Resource => &["setup", "teardown", "health"],
            Self::Compensatable => &["run", "compensate", "config", "compensation_config", "name"],
            Self::Router => &["route", "targets", "name"],
            Self::Poll => &[
                "poll",
                "on_error",
                "on_poll_error",
                "max_wait",
                "config",
                "name",
            ],
            Self::Batch => &[
                "load",
                "process_item",
                "finish",
                "concurrency",
                "item_retry",
                "batch_config",
                "config",
                "name",
                "item_codec",
                "worker_copy",
            ],
            Self::Stepped => &["step", "config", "name"],
            Self::Timer => &["deadline", "fire", "config", "name"],
            Self::Stream => &["open", "flush", "finish", "stream_config", "config", "name"],
            Self::CheckpointStore => &["append", "load_run", "clear"],
        };
        match item {
            ImplItem::Fn(f) => names.contains(&f.sig.ident.to_string().as_str()),
            ImplItem::Type(t) => match self {
                Self::Node => t.ident == "PrepResult" || t.ident == "ExecResult",
                Self::Compensatable => t.ident == "Output",
                Self::Batch => t.ident == "Item" || t.ident == "ItemOutput",
                Self::Stream | Self::Stepped => t.ident == "Item" || t.ident == "Cursor",
                _ => false,
            },
            _ => false,
        }
    }
}

/// `state = S` and `key = K`.
#[derive(Default)]
struct Args {
    state: Option<Type>,
    key: Option<Type>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let name: syn::Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let ty: Type = input.parse()?;
            match name.to_string().as_str() {
                "state" => args.state = Some(ty),
                "key" => args.key = Some(ty),
                other => {
                    return Err(Error::new(
                        name.span(),
                        format!(
                            "unknown argument `{other}`: expected `state = YourStateEnum` or `key = YourKeyType`"
                        ),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

pub fn expand(args: TokenStream, item: TokenStream, target: Target) -> syn::Result<TokenStream> {
    let args: Args = syn::parse2(args)?;
    let mut block: ItemImpl = syn::parse2(item).map_err(|e| {
        Error::new(
            e.span(),
            format!("#[{}] goes on an impl block", target.attribute()),
        )
    })?;
    // `BatchTask` declares its steps as native `async fn`s (an item's future is not
    // boxed); the other traits are `#[async_trait]` ones.
    let async_trait = match target {
        Target::Batch => quote!(),
        _ => quote!(#[::cano::__private::async_trait]),
    };
    match target {
        Target::Batch => {
            let key = match (&block.trait_, &args.key) {
                (Some(_), _) => trait_args(&block)?.1,
                (None, Some(key)) => quote!(#key),
                (None, None) => quote!(::cano::DefaultKey),
            };
            adapt_batch(&mut block.items, &key)?;
        }
        Target::Stepped => adapt_stepped(&mut block.items)?,
        _ => {}
    }

    if block.trait_.is_some() {
        if args.state.is_some() || args.key.is_some() {
            return Err(Error::new_spanned(
                &block.self_ty,
                "`state = ..` is only for inherent impl blocks; this block already names its trait",
            ));
        }
        let companion = match target.model_module() {
            Some(_) => {
                let (state, key) = trait_args(&block)?;
                companion_task(&block, target, &state, &key)
            }
            None => quote!(),
        };
        return Ok(quote!(#async_trait #block #companion));
    }

    // An inherent block: build the trait impl from it.
    let trait_path = match target {
        Target::Resource => quote!(::cano::Resource),
        Target::CheckpointStore => quote!(::cano::recovery::CheckpointStore),
        _ => {
            let Some(state) = &args.state else {
                return Err(Error::new_spanned(
                    &block.self_ty,
                    format!(
                        "on an inherent impl block, name the state type: #[{}(state = YourStateEnum)]",
                        target.attribute()
                    ),
                ));
            };
            let name = syn::Ident::new(target.trait_name(), proc_macro2::Span::call_site());
            let path = match (target, target.model_module()) {
                (Target::Compensatable, _) => quote!(::cano::saga::#name),
                (_, Some(module)) => {
                    let module = syn::Ident::new(module, proc_macro2::Span::call_site());
                    quote!(::cano::task::#module::#name)
                }
                _ => quote!(::cano::#name),
            };
            match &args.key {
                Some(key) => quote!(#path<#state, #key>),
                None => quote!(#path<#state>),
            }
        }
    };
    let (owned, rest): (Vec<ImplItem>, Vec<ImplItem>) =
        block.items.drain(..).partition(|i| target.owns(i));
    if owned.is_empty() {
        return Err(Error::new_spanned(
            &block.self_ty,
            format!(
                "this block defines none of the `{}` methods",
                target.trait_name()
            ),
        ));
    }
    let (impl_generics, _, where_clause) = block.generics.split_for_impl();
    let self_ty = &block.self_ty;
    let attrs = &block.attrs;
    let inherent = if rest.is_empty() {
        quote!()
    } else {
        quote!(#(#attrs)* impl #impl_generics #self_ty #where_clause { #(#rest)* })
    };
    let owned = owned.into_iter().map(strip_visibility);
    let companion = match (target.model_module(), &args.state) {
        (Some(_), Some(state)) => {
            let key = match &args.key {
                Some(key) => quote!(#key),
                None => quote!(::cano::DefaultKey),
            };
            companion_task(&block, target, &quote!(#state), &key)
        }
        _ => quote!(),
    };
    Ok(quote! {
        #async_trait
        impl #impl_generics #trait_path for #self_ty #where_clause { #(#owned)* }
        #inherent
        #companion
    })
}

/// The state and key types named by `impl PollTask<S, K> for T`.
fn trait_args(block: &ItemImpl) -> syn::Result<(TokenStream, TokenStream)> {
    let Some((_, path, _)) = &block.trait_ else {
        unreachable!("only called for trait impl blocks")
    };
    let segment = path.segments.last().expect("a trait path has a segment");
    let mut types = Vec::new();
    if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
        for arg in &args.args {
            if let syn::GenericArgument::Type(ty) = arg {
                types.push(quote!(#ty));
            }
        }
    }
    match types.len() {
        1 => Ok((types.remove(0), quote!(::cano::DefaultKey))),
        2 => {
            let key = types.remove(1);
            Ok((types.remove(0), key))
        }
        _ => Err(Error::new_spanned(
            path,
            format!(
                "name the state type: `impl {}<YourStateEnum> for ..`",
                segment.ident
            ),
        )),
    }
}

/// The `Task` impl that makes a task model registrable with `Workflow::register`.
fn companion_task(
    block: &ItemImpl,
    target: Target,
    state: &TokenStream,
    key: &TokenStream,
) -> TokenStream {
    let (impl_generics, _, where_clause) = block.generics.split_for_impl();
    let self_ty = &block.self_ty;
    let module = syn::Ident::new(
        target.model_module().expect("a task model"),
        proc_macro2::Span::call_site(),
    );
    let name = syn::Ident::new(target.trait_name(), proc_macro2::Span::call_site());
    let model = quote!(::cano::task::#module::#name<#state, #key>);
    let (body, config) = match target {
        Target::Router => (
            quote!(<Self as #model>::route(self, res)),
            quote!(::cano::TaskConfig::minimal()),
        ),
        _ => {
            let runner = syn::Ident::new(&format!("run_{module}"), proc_macro2::Span::call_site());
            (
                quote!(::std::boxed::Box::pin(::cano::task::#module::#runner(self, res))),
                quote!(<Self as #model>::config(self)),
            )
        }
    };
    quote! {
        impl #impl_generics ::cano::Task<#state, #key> for #self_ty #where_clause {
            fn run<'cano_self, 'cano_res, 'cano_future>(
                &'cano_self self,
                res: &'cano_res ::cano::Resources<#key>,
            ) -> ::cano::TaskFuture<'cano_future, #state>
            where
                'cano_self: 'cano_future,
                'cano_res: 'cano_future,
                Self: 'cano_future,
            {
                #body
            }

            fn config(&self) -> ::cano::TaskConfig {
                #config
            }

            fn name(&self) -> ::std::borrow::Cow<'static, str> {
                <Self as #model>::name(self)
            }
        }
    }
}

fn find_fn<'a>(items: &'a [ImplItem], name: &str) -> Option<&'a syn::ImplItemFn> {
    items.iter().find_map(|item| match item {
        ImplItem::Fn(f) if f.sig.ident == name => Some(f),
        _ => None,
    })
}

fn has_type(items: &[ImplItem], name: &str) -> bool {
    items
        .iter()
        .any(|item| matches!(item, ImplItem::Type(t) if t.ident == name))
}

/// The `T` of a return type `Result<T, _>` (or `CanoResult<T>`).
fn ok_type(output: &syn::ReturnType) -> Option<&Type> {
    let syn::ReturnType::Type(_, ty) = output else {
        return None;
    };
    first_generic(ty, &["Result", "CanoResult"])
}

/// The first type argument of `ty` when its last path segment is one of `names`.
fn first_generic<'a>(ty: &'a Type, names: &[&str]) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let segment = path.path.segments.last()?;
    if !names.contains(&segment.ident.to_string().as_str()) {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// A batch impl block, completed: cano 0.13's `process_item(&self, item)` gets the
/// resources parameter (and the block 0.13's defaults: one item at a time, the whole
/// batch retried as `TaskConfig::default()`), missing `Item` / `ItemOutput` are read
/// off `load` and `process_item`, and `item_codec` / `worker_copy` are picked by what
/// the types can do.
fn adapt_batch(items: &mut Vec<ImplItem>, key: &TokenStream) -> syn::Result<()> {
    let mut form_0_13 = false;
    for item in items.iter_mut() {
        if let ImplItem::Fn(f) = item
            && f.sig.ident == "process_item"
            && f.sig.inputs.len() == 2
        {
            form_0_13 = true;
            f.sig
                .inputs
                .insert(1, syn::parse_quote!(_: &::cano::Resources<#key>));
        }
    }
    let mut added: Vec<ImplItem> = Vec::new();
    if !has_type(items, "Item")
        && let Some(load) = find_fn(items, "load")
    {
        let Some(item) = ok_type(&load.sig.output).and_then(|v| first_generic(v, &["Vec"])) else {
            return Err(Error::new_spanned(
                &load.sig,
                "cannot read the item type off `load`: declare `type Item = ..;` in the block",
            ));
        };
        added.push(syn::parse_quote!(type Item = #item;));
    }
    if !has_type(items, "ItemOutput")
        && let Some(process) = find_fn(items, "process_item")
    {
        let Some(output) = ok_type(&process.sig.output) else {
            return Err(Error::new_spanned(
                &process.sig,
                "cannot read the output type off `process_item`: declare `type ItemOutput = ..;` in the block",
            ));
        };
        added.push(syn::parse_quote!(type ItemOutput = #output;));
    }
    if form_0_13 && find_fn(items, "config").is_none() {
        added.push(syn::parse_quote!(
            fn config(&self) -> ::cano::TaskConfig {
                ::cano::TaskConfig::default()
            }
        ));
    }
    if form_0_13 && find_fn(items, "concurrency").is_none() {
        added.push(syn::parse_quote!(
            fn concurrency(&self) -> usize {
                1
            }
        ));
    }
    if find_fn(items, "item_codec").is_none() {
        added.push(syn::parse_quote!(
            fn item_codec(
                &self,
            ) -> ::std::option::Option<::cano::task::batch::ItemCodec<Self::ItemOutput>>
            {
                #[allow(unused_imports)]
                use ::cano::task::batch::probe::{NoCodec as _, SerdeCodec as _};
                (&&::cano::task::batch::probe::Probe::<Self::ItemOutput>::new()).codec()
            }
        ));
    }
    if find_fn(items, "worker_copy").is_none() {
        added.push(syn::parse_quote!(
            fn worker_copy(&self) -> ::std::option::Option<Self>
            where
                Self: Sized,
            {
                #[allow(unused_imports)]
                use ::cano::task::batch::probe::{CloneCopy as _, NoCopy as _};
                (&&::cano::task::batch::probe::Probe::<Self>::new()).copy_of(self)
            }
        ));
    }
    items.extend(added);
    Ok(())
}

/// A stepped impl block, completed: a missing `Cursor` is read off `step`'s cursor
/// parameter (`Option<C>`).
fn adapt_stepped(items: &mut Vec<ImplItem>) -> syn::Result<()> {
    if has_type(items, "Cursor") {
        return Ok(());
    }
    let Some(step) = find_fn(items, "step") else {
        return Ok(());
    };
    let cursor = step.sig.inputs.iter().nth(2).and_then(|arg| match arg {
        syn::FnArg::Typed(pat) => first_generic(&pat.ty, &["Option"]),
        syn::FnArg::Receiver(_) => None,
    });
    let Some(cursor) = cursor else {
        return Err(Error::new_spanned(
            &step.sig,
            "cannot read the cursor type off `step(&self, res, cursor: Option<C>)`: declare `type Cursor = ..;` in the block",
        ));
    };
    let cursor = cursor.clone();
    items.push(syn::parse_quote!(type Cursor = #cursor;));
    Ok(())
}

/// Trait methods take no visibility; a `pub` written in the inherent form is dropped.
fn strip_visibility(mut item: ImplItem) -> ImplItem {
    match &mut item {
        ImplItem::Fn(f) => f.vis = syn::Visibility::Inherited,
        ImplItem::Type(t) => t.vis = syn::Visibility::Inherited,
        _ => {}
    }
    item
}
