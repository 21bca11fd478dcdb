/**
 * A `memo` for Preact function components without preact/compat (whose
 * per-vnode hook costs more than the memo saves in a 2,000-row list).
 */
import { createElement, type Component, type FunctionComponent } from 'preact';

function shallowEqual<P extends object>(a: P, b: P): boolean {
  for (const k in a) if (!(k in b)) return false;
  for (const k in b) if (a[k] !== b[k]) return false;
  return true;
}

/** `c`, re-rendered only when `same(prev, next)` is false (shallow equality by default). */
export function memo<P extends object>(c: FunctionComponent<P>, same: (prev: P, next: P) => boolean = shallowEqual): FunctionComponent<P> {
  function shouldUpdate(this: Component<P>, next: P) {
    return !same(this.props as P, next);
  }
  function Memoed(this: Component<P>, props: P) {
    this.shouldComponentUpdate = shouldUpdate;
    return createElement(c, props);
  }
  Memoed.displayName = `Memo(${c.displayName || c.name})`;
  return Memoed;
}
