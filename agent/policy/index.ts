// agent/policy: MeshPolicy evaluation at the destination proxy (DESIGN §4), pure functions.
export { evaluate, describeDecision, forSource, grpcOf, matchRule } from './evaluate.ts';
export type { Decision, DecisionReason, PolicyRef, PolicyRequest, PolicySource } from './evaluate.ts';
export { matchValue, matchHost } from './match.ts';
export { declaredProtocol, type DeclaredProtocol } from './protocol.ts';
