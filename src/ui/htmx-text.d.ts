// htmx.org's minified bundle, imported as text by the wrangler.toml [[rules]] Text glob.
declare module "htmx.org/dist/htmx.min.js" {
  const source: string;
  export default source;
}
