// Validates Gateway API objects with the validators of the npm package
// @kubernetes-models/gateway-api (compiled from the Gateway API CRDs' OpenAPI schemas: required
// fields, enums, ranges, patterns), and rejects unknown fields, which those validators let
// through (an API server prunes them, or refuses them with strict field validation), by walking
// the object against the property names of the package's generated interfaces.
//
// usage: node validate.mjs PACKAGE_DIR < objects.json   (a JSON array of objects)
// prints one JSON line per object: {"index": N, "errors": ["path: message", ...]}
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const pkg = process.argv[2];
if (!pkg) {
  console.error("usage: node validate.mjs PACKAGE_DIR < objects.json");
  process.exit(2);
}
const groupDir = (apiVersion) => join(pkg, ...apiVersion.split("/"));

// Interface name -> { property: type text }, read from one generated .d.ts file.
function interfaceOf(dir, file) {
  const text = readFileSync(join(dir, file), "utf8");
  const start = text.indexOf("export interface I");
  const end = text.indexOf("\n}", start);
  const body = text.slice(start, end).replace(/\/\*\*[\s\S]*?\*\//g, "");
  const props = {};
  for (const m of body.matchAll(/^\s+"([A-Za-z0-9]+)"\??: (.+);$/gm)) props[m[1]] = m[2];
  const imports = {};
  for (const m of text.matchAll(/import \{ (I\w+) \} from "\.\/(\w+)\.js";/g)) imports[m[1]] = `${m[2]}.d.ts`;
  return { props, imports };
}

// Unknown fields of `value` against the interface in `file`, recursively.
function unknownFields(dir, file, value, path, out) {
  if (value === null || typeof value !== "object") return;
  const { props, imports } = interfaceOf(dir, file);
  if (Object.keys(props).length === 0) return; // a scalar alias or a map
  for (const [key, child] of Object.entries(value)) {
    if (!(key in props)) {
      out.push(`${path}${key}: unknown field`);
      continue;
    }
    if (key === "metadata" || key === "status") continue; // ObjectMeta is Kubernetes' own
    const type = props[key].replace(/^Array<(.+)>$/, "$1");
    const next = imports[type];
    if (!next) continue;
    const items = Array.isArray(child) ? child.map((c, i) => [c, `${path}${key}[${i}].`]) : [[child, `${path}${key}.`]];
    for (const [c, p] of items) unknownFields(dir, next, c, p, out);
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
for (const [index, object] of objects.entries()) {
  const errors = [];
  const dir = groupDir(object.apiVersion ?? "");
  try {
    const module = await import(pathToFileURL(join(dir, `${object.kind}.js`)).href);
    const Model = module[object.kind];
    try {
      new Model(object).validate();
    } catch (e) {
      errors.push(...String(e.message).split("\n").filter((l) => l.trim()));
    }
    unknownFields(dir, `${object.kind}.d.ts`, object, "", errors);
  } catch (e) {
    errors.push(`no model for ${object.apiVersion} ${object.kind}: ${e.message}`);
  }
  console.log(JSON.stringify({ index, errors }));
}
