/**
 * The optional backend capabilities (types.ts): each guard answers from the backend's declared
 * `capabilities`, not from which methods happen to exist; a declared capability whose methods are
 * missing is a bug the guard reports by name. The CPU backend declares none; CudaBackend declares
 * all four (checked on its class, so without a GPU).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CAPABILITIES, hasDecodeAttention, hasDeviceSampling, hasFusedDecode, hasGraphCapture } from "../../src/tensor/index.ts";
import type { Backend } from "../../src/tensor/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { CUDA_CAPABILITIES, CudaBackend } from "../../src/tensor/backend/cuda/index.ts";
import { InvariantError } from "../../src/util/errors.ts";

const guards = {
  graphCapture: hasGraphCapture,
  fusedDecode: hasFusedDecode,
  decodeAttention: hasDecodeAttention,
  deviceSampling: hasDeviceSampling,
};

test("guards follow the declaration: none on the CPU, exactly the declared one on a stand-in", () => {
  assert.deepEqual(Object.keys(guards).sort(), [...CAPABILITIES].sort());
  const cpu = new CpuBackend({ threads: 1 });
  for (const g of Object.values(guards)) assert.equal(g(cpu), false);
  // Methods alone are not a declaration (no duck typing).
  const undeclared = Object.assign(new CpuBackend({ threads: 1 }), {
    sampleRows: () => ({ ids: new Int32Array(0), logprobs: new Float64Array(0) }),
  });
  assert.equal(hasDeviceSampling(undeclared), false);
  const declared: Backend = Object.assign(new CpuBackend({ threads: 1 }), {
    capabilities: ["deviceSampling"] as const,
    sampleRows: () => ({ ids: new Int32Array(0), logprobs: new Float64Array(0) }),
  });
  for (const [name, g] of Object.entries(guards)) assert.equal(g(declared), name === "deviceSampling", name);
});

test("a declared capability without its methods is a bug, named", () => {
  const broken: Backend = Object.assign(new CpuBackend({ threads: 1 }), { capabilities: ["fusedDecode"] as const, decodeGemv: () => {} });
  assert.throws(
    () => hasFusedDecode(broken),
    (e: unknown) => e instanceof InvariantError && /declares "fusedDecode" but has no decodeRmsnorm, decodeQkNormRope/.test(e.message),
  );
});

test("CudaBackend declares every capability and has each one's methods", () => {
  assert.deepEqual([...CUDA_CAPABILITIES].sort(), [...CAPABILITIES].sort());
  // An instance without the device setup (no GPU here): the guards see the declaration and find
  // every method on the class.
  const shell = Object.assign(Object.create(CudaBackend.prototype) as CudaBackend, { name: "cuda", capabilities: CUDA_CAPABILITIES });
  for (const [name, g] of Object.entries(guards)) assert.equal(g(shell), true, name);
});
