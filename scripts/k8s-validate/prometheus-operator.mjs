// Validates Prometheus Operator objects (ServiceMonitor, PodMonitor, PrometheusRule)
// against the monitoring.coreos.com/v1 API schema, as generated from the operator's Go
// types by the pinned npm package @kubernetes-models/prometheus-operator (package.json,
// package-lock.json here): types, required fields, enums and patterns (durations, …).
// Like the CRD's schema, it does not reject unknown fields.
//
//   node prometheus-operator.mjs NODE_MODULES_DIR < objects.json
//
// stdin: a JSON array of objects. Prints "ok KIND/NAME" or "error KIND/NAME: …" per
// object; exits 1 when one is invalid or of an unknown kind.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node prometheus-operator.mjs NODE_MODULES_DIR < objects.json");
  process.exit(2);
}
const pkg = join(modules, "@kubernetes-models/prometheus-operator");
const version = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version;
const models = {};
for (const kind of ["ServiceMonitor", "PodMonitor", "PrometheusRule"]) {
  const file = join(pkg, "monitoring.coreos.com/v1", `${kind}.js`);
  models[kind] = (await import(pathToFileURL(file).href))[kind];
}

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const obj of objects) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const Model = obj.apiVersion === "monitoring.coreos.com/v1" ? models[obj.kind] : undefined;
  if (!Model) {
    console.log(`error ${id}: not a monitoring.coreos.com/v1 ServiceMonitor, PodMonitor or PrometheusRule`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok ${id} (@kubernetes-models/prometheus-operator ${version})`);
  } catch (e) {
    console.log(`error ${id}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
