//! The derive macros.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Error, Expr, Fields, GenericArgument, PathArguments, Type};

pub fn resource(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote!(impl #impl_generics ::cano::Resource for #name #ty_generics #where_clause {}))
}

/// The key of one `#[res(..)]` field.
enum Key {
    Str(syn::LitStr),
    Path(syn::ExprPath),
}

pub fn from_resources(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(Error::new_spanned(
            name,
            "#[derive(FromResources)] works on structs with named fields",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(Error::new_spanned(
            name,
            "#[derive(FromResources)] works on structs with named fields",
        ));
    };

    let mut inits = Vec::new();
    let mut key_type: Option<TokenStream> = None;
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let attr = field
            .attrs
            .iter()
            .find(|a| a.path().is_ident("res"))
            .ok_or_else(|| {
                Error::new_spanned(
                    ident,
                    format!("field `{ident}` needs #[res(\"key\")] or #[res(KeyEnum::Variant)]"),
                )
            })?;
        let key = match attr.parse_args::<Expr>()? {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Key::Str(s),
            Expr::Path(p) if p.path.segments.len() >= 2 => Key::Path(p),
            other => {
                return Err(Error::new_spanned(
                    other,
                    "a resource key is a string literal or an enum variant path (Key::Variant)",
                ));
            }
        };
        let inner = arc_inner(&field.ty).ok_or_else(|| {
            Error::new_spanned(
                &field.ty,
                format!("field `{ident}` must be an `Arc<T>` (resources are shared)"),
            )
        })?;
        let this_key_type = match &key {
            Key::Str(_) => quote!(::cano::DefaultKey),
            Key::Path(p) => {
                let mut path = p.path.clone();
                path.segments.pop();
                let path = path
                    .segments
                    .pairs()
                    .map(|p| p.into_value())
                    .collect::<Vec<_>>();
                quote!(#(#path)::*)
            }
        };
        match &key_type {
            None => key_type = Some(this_key_type),
            Some(seen) if seen.to_string() == this_key_type.to_string() => {}
            Some(seen) => {
                return Err(Error::new_spanned(
                    ident,
                    format!(
                        "all fields must use one key type; this one uses `{this_key_type}`, an earlier one `{seen}`"
                    ),
                ));
            }
        }
        let lookup = match key {
            Key::Str(s) => {
                let context = format!("field `{ident}` (key {:?})", s.value());
                quote!(res.get::<#inner, str>(#s).map_err(|e| e.with_context(#context))?)
            }
            Key::Path(p) => {
                let shown = quote!(#p).to_string().replace(' ', "");
                let context = format!("field `{ident}` (key {shown})");
                quote!(res.get::<#inner, _>(&#p).map_err(|e| e.with_context(#context))?)
            }
        };
        inits.push(quote!(#ident: #lookup));
    }
    let key_type = key_type.unwrap_or_else(|| quote!(::cano::DefaultKey));
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics #name #ty_generics #where_clause {
            /// Looks every field up in `res` by its `#[res(..)]` key; fails with the
            /// first missing key or mismatched type.
            pub fn from_resources(res: &::cano::Resources<#key_type>) -> ::core::result::Result<Self, ::cano::CanoError> {
                ::core::result::Result::Ok(Self { #(#inits),* })
            }
        }
    })
}

/// `T` of a field typed `Arc<T>` (any path ending in `Arc`).
fn arc_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Arc" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
}
