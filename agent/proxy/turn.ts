// Writes gathered over one turn of the event loop and issued together at its end.
//
// The lean HTTP/1.1 paths (client-h1.ts answering clients, pod-h1.ts asking pods) do not
// write the moment something is ready: they queue themselves here, and at the end of the
// turn (setImmediate: the check phase, after every socket event the poll phase handed over)
// their writes go out back to back. A small write to a loopback socket costs little; waking
// the reader on another CPU that has gone idle costs far more, and when the writes of a turn
// are spread over its whole length the other CPU idles between them and is woken for each.
// Issued together, one wake-up serves them all. On the bench machine this took HTTP/1.1 same
// node from 8,000–14,300 to 15,000–18,700 requests/s on one core (docs/benchmarks.md). What
// is queued waits at most for the rest of the turn's events: microseconds, not a timer.

/** something that writes, at the end of the turn, what it gathered during it */
export interface EndOfTurn {
  endOfTurn(): void;
}

const due: EndOfTurn[] = [];
let scheduled = false;

/** have `x.endOfTurn()` called at the end of this turn; the caller queues itself once per turn */
export function atEndOfTurn(x: EndOfTurn): void {
  due.push(x);
  if (!scheduled) {
    scheduled = true;
    setImmediate(runDue);
  }
}

function runDue(): void {
  let failure: unknown;
  // what runs here may queue more for this turn (an answer lets held requests go on): it
  // is written in this same pass
  for (let i = 0; i < due.length; i++) {
    try {
      due[i]!.endOfTurn();
    } catch (err) {
      failure ??= err;
    }
  }
  due.length = 0;
  scheduled = false;
  // a bug, not a peer's doing: it surfaces as it would have without the batching, after
  // everyone else's writes went out
  if (failure !== undefined) throw failure;
}
