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
}

impl Target {
    fn trait_name(self) -> &'static str {
        match self {
            Self::Task => "Task",
            Self::Node => "Node",
            Self::Resource => "Resource",
            Self::Compensatable => "CompensatableTask",
        }
    }

    /// The attribute as users write it, for error messages.
    fn attribute(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Node => "node",
            Self::Resource => "resource",
            Self::Compensatable => "saga::task",
        }
    }

    /// The items of the trait, which move from an inherent block into the trait impl.
    fn owns(self, item: &ImplItem) -> bool {
        let names: &[&str] = match self {
            Self::Task => &["run", "run_bare", "config", "name"],
            Self::Node => &["prep", "exec", "post", "config", "name"],
            Self::Resource => &["setup", "teardown", "health"],
            Self::Compensatable => &["run", "compensate", "config", "compensation_config", "name"],
        };
        match item {
            ImplItem::Fn(f) => names.contains(&f.sig.ident.to_string().as_str()),
            ImplItem::Type(t) => match self {
                Self::Node => t.ident == "PrepResult" || t.ident == "ExecResult",
                Self::Compensatable => t.ident == "Output",
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
    let async_trait = quote!(#[::cano::__private::async_trait]);

    if block.trait_.is_some() {
        if args.state.is_some() || args.key.is_some() {
            return Err(Error::new_spanned(
                &block.self_ty,
                "`state = ..` is only for inherent impl blocks; this block already names its trait",
            ));
        }
        return Ok(quote!(#async_trait #block));
    }

    // An inherent block: build the trait impl from it.
    let trait_path = match target {
        Target::Resource => quote!(::cano::Resource),
        Target::Task | Target::Node | Target::Compensatable => {
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
            let path = match target {
                Target::Compensatable => quote!(::cano::saga::#name),
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
    Ok(quote! {
        #async_trait
        impl #impl_generics #trait_path for #self_ty #where_clause { #(#owned)* }
        #inherent
    })
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
