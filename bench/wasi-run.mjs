// Runs a wasm32-wasip1 command module under Node's WASI (V8, the engine of
// Envoy's Wasm runtime): node wasi-run.mjs MODULE.wasm [ARGS...]
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const [module, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: "preview1", args: [module, ...args], env: {}, returnOnExit: true });
const wasm = await WebAssembly.compile(await readFile(module));
const instance = await WebAssembly.instantiate(wasm, wasi.getImportObject());
process.exitCode = wasi.start(instance);
