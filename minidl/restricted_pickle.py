"""A pickle reader for bytes that may be hostile: a small pickle machine that calls nothing
outside a table the caller gives, changes nothing it did not build in this load, and works
from an explicit budget. Used for CIFAR-10 batches (:mod:`minidl.data.safe_pickle`) and
PyTorch checkpoints (:mod:`minidl.torch_format`).

``pickle.Unpickler`` with a ``find_class`` allow-list is not enough: its BUILD, SETITEM,
APPEND and attribute sets act on whatever object is on the stack (a module-level object
that an allowed global resolved to included, so one file could change how the next one
loads); it allocates whatever a length field claims; and it returns values whose shared
references make a walk without a memo visit exponentially many nodes. This machine:

* resolves a global only through the caller's table: an entry is a :class:`Constructor`
  (a function that builds a *fresh* value from its arguments; REDUCE may call it) or an
  immutable :class:`Sentinel` (a marker, never called, never changed);
* lets APPEND(S), SETITEM(S), ADDITEMS and BUILD act only on containers built in this load
  that are not yet inside another container: once a value is nested it never changes, so a
  result has no reference cycles and its size is known when it is nested. BUILD is accepted
  by the per-load :class:`Pending` values a constructor returns (an empty array waiting for
  its bytes) and by a fresh ``OrderedDict`` (its state, PyTorch's ``_metadata``, is dropped);
* checks every length field against the bytes that remain before taking them, counts every
  value against a :class:`Budget` (limits below), and takes as dict keys and set items only
  values whose hashes cannot be made to collide (strings, bytes, small ints), so that the
  time and memory of a load are bounded by the size of the file.

Every refusal is an :class:`UnsafePickleError`: a ValueError (and a
``pickle.UnpicklingError``) whose message names the stream and the byte offset.
"""
import codecs
import collections
import pickle
import pickletools
import struct

# The limits (module constants; a Budget may lower them):
MAX_PICKLE_BYTES = 1 << 30   # bytes of one pickle stream (a CIFAR-10 batch is 31 MB)
MAX_VALUES = 1 << 21         # values one stream may create (2,097,152)
MAX_DEPTH = 100              # containers nested in containers
MAX_TREE_NODES = 1 << 22     # size of the result counted as a tree: a value reached through k
#                              references counts k times, so that any walk of the result (one
#                              without a memo included) visits at most this many nodes
ALLOC_PER_FILE_BYTE = 8      # bytes constructors may allocate (arrays, tensors, storages) per
ALLOC_SLACK = 1 << 20        # byte of the file, plus this slack for tiny files

_PROTOCOL_MAX = 5
_SMALL_INT = 1 << 61  # ints below this in size hash to themselves: no two collide


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that is malformed, over budget, or asks for something that is not allowed."""


class Budget:
    """What one load may spend; ``alloc_bytes`` is shared by the machine's constructors and the
    caller (storages, tensors), and goes down as they allocate."""

    def __init__(self, alloc_bytes, values=MAX_VALUES, depth=MAX_DEPTH, tree_nodes=MAX_TREE_NODES):
        self.alloc_bytes, self.values, self.depth, self.tree_nodes = alloc_bytes, values, depth, tree_nodes

    @classmethod
    def for_file(cls, file_size, max_bytes=None):
        """The budget for a file of ``file_size`` bytes: ``ALLOC_PER_FILE_BYTE * file_size +
        ALLOC_SLACK`` bytes of allocations, at most ``max_bytes``."""
        alloc = ALLOC_PER_FILE_BYTE * file_size + ALLOC_SLACK
        return cls(alloc if max_bytes is None else min(alloc, max_bytes))

    def charge(self, nbytes, what):
        """Count ``nbytes`` about to be allocated for ``what``; refuse them beyond the budget."""
        if nbytes > self.alloc_bytes:
            raise UnsafePickleError(f"{what} needs {nbytes} bytes, more than the {self.alloc_bytes} "
                                    "bytes left in this file's budget")
        self.alloc_bytes -= nbytes


class Sentinel:
    """What a global that is not a constructor resolves to (``torch.FloatStorage``,
    ``numpy.ndarray``): an immutable marker that a constructor may recognise."""

    __slots__ = ("name",)

    def __init__(self, name):
        object.__setattr__(self, "name", name)

    def __setattr__(self, key, value):
        raise AttributeError(f"{self.name} is immutable")

    __delattr__ = __setattr__

    def __repr__(self):
        return f"<{self.name}>"


class Constructor(Sentinel):
    """A global that REDUCE may call: ``fn(machine, *args)`` must return a fresh value built
    from ``args`` (registering containers with :meth:`Machine.new_container`, charging
    allocations to ``machine.budget``) or raise."""

    __slots__ = ("fn",)

    def __init__(self, name, fn):
        super().__init__(name)
        object.__setattr__(self, "fn", fn)


class Pending:
    """A fresh per-load value that a later BUILD completes (an empty array waiting for its
    bytes). ``build(machine, state)`` is called at most once, before the value is nested;
    ``finish()`` gives what the value stands for once it is nested or returned."""

    built = False
    placed = False

    def build(self, machine, state):
        raise NotImplementedError

    def finish(self):
        raise NotImplementedError


def kind(value):
    """A short description of ``value`` for error messages (never a repr of file data)."""
    if isinstance(value, Sentinel):
        return value.name
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 24 else f"an int of {value.bit_length()} bits"
    if isinstance(value, (str, bytes)) and len(value) <= 40:
        return repr(value)
    if isinstance(value, (list, tuple, dict, set, frozenset, str, bytes, bytearray)):
        return f"a {type(value).__name__} of length {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


_MARK = object()


class Machine:
    """Runs one pickle stream: ``Machine(data, table, budget, name=...).load()`` returns
    ``(value, end)``, ``end`` the offset after STOP (streams may follow each other).

    ``data``: bytes, bytearray or mmap; the stream starts at ``start``. ``table``: ``{(module,
    name): Constructor or Sentinel}``. ``persistent_load(pid)``: what a persistent id stands
    for (absent: persistent ids are refused). ``encoding``: for Python 2 ``str`` values,
    ``'bytes'`` to keep them as bytes, else a codec name."""

    def __init__(self, data, table, budget, name, start=0, persistent_load=None, encoding="utf-8"):
        self.data, self.table, self.budget, self.name = data, table, budget, name
        self.pos, self.end = start, min(len(data), start + MAX_PICKLE_BYTES)
        self.persistent = persistent_load
        self.encoding = encoding
        self.stack, self.metastack, self.memo = [], [], {}
        self.values = 0
        self.info = {}     # id(container) -> [depth, tree nodes, nested?]
        self.alive = []    # keeps registered containers alive, so that their ids stay theirs
        self.op_pos = start

    # --- errors and reading ----------------------------------------------------------------------
    def error(self, what):
        return UnsafePickleError(f"{self.name}, byte {self.op_pos}: {what}")

    def take(self, n):
        """The next ``n`` bytes (a memoryview), after checking that they are there."""
        if n < 0:
            raise UnsafePickleError(f"negative length {n}")
        if n > self.end - self.pos:
            raise UnsafePickleError(f"a length field claims {n} bytes but only {self.end - self.pos} remain")
        start = self.pos
        self.pos += n
        return self.view[start:start + n]

    def line(self):
        stop = self.data.find(b"\n", self.pos, self.end)
        if stop < 0:
            raise UnsafePickleError("unterminated text line")
        out = bytes(self.view[self.pos:stop])
        self.pos = stop + 1
        return out

    def uint(self, n):
        return int.from_bytes(self.take(n), "little")

    # --- values ----------------------------------------------------------------------------------
    def count(self, value):
        self.values += 1
        if self.values > self.budget.values:
            raise UnsafePickleError(f"more than {self.budget.values} values (the limit)")
        return value

    def push(self, value):
        self.stack.append(self.count(value))

    def new_container(self, obj, depth=1, nodes=1):
        """Register ``obj`` (a list, dict, set, tuple or frozenset built in this load)."""
        if depth > self.budget.depth:
            raise UnsafePickleError(f"containers nested more than {self.budget.depth} deep (the limit)")
        if nodes > self.budget.tree_nodes:
            raise UnsafePickleError(f"a value of more than {self.budget.tree_nodes} nodes counted as a tree "
                                    "(shared references counted each time; the limit)")
        self.info[id(obj)] = [depth, nodes, False]
        self.alive.append(obj)
        return obj

    def place(self, value):
        """``value`` as it goes into a container, a constructor's arguments or the result:
        a Pending value is replaced by what it stands for, a container becomes immutable.
        Returns ``(value, depth, tree nodes)``."""
        if isinstance(value, Pending):
            value.placed = True
            value = value.finish()
        info = self.info.get(id(value))
        if info is None:
            return value, 0, 1
        info[2] = True
        return value, info[0], info[1]

    def grow(self, container, depth, nodes):
        """Count a placed item into ``container`` (which must still be free: an item that is
        the container itself has just made it nested, and would make a cycle)."""
        info = self.info[id(container)]
        if info[2]:
            raise UnsafePickleError(f"a {type(container).__name__} cannot contain itself")
        info[0] = max(info[0], depth + 1)
        info[1] += nodes
        if info[0] > self.budget.depth:
            raise UnsafePickleError(f"containers nested more than {self.budget.depth} deep (the limit)")
        if info[1] > self.budget.tree_nodes:
            raise UnsafePickleError(f"a value of more than {self.budget.tree_nodes} nodes counted as a tree "
                                    "(shared references counted each time; the limit)")

    def key(self, value):
        """``value`` as a dict key or set item: a string, bytes, None, a bool or an int below
        2**61 in size. Their hashes are seeded (strings) or distinct (small ints), so no file
        can make a dict's inserts collide and take quadratic time; floats, big ints and tuples
        could."""
        value, _, _ = self.place(value)
        if not (type(value) in (str, bytes, bool) or value is None
                or (type(value) is int and -_SMALL_INT < value < _SMALL_INT)):
            raise UnsafePickleError(f"dict keys and set items must be strings, bytes or small integers, "
                                    f"not {kind(value)}")
        return value

    def mutable(self, types, what):
        """The container on top of the stack, if it was built here and is not nested yet."""
        if not self.stack:
            raise UnsafePickleError(f"{what} on an empty stack")
        target = self.stack[-1]
        info = self.info.get(id(target))
        if type(target) not in types or info is None:
            raise UnsafePickleError(f"{what} on {kind(target)} is not allowed")
        if info[2]:
            raise UnsafePickleError(f"{what} on a {type(target).__name__} that is already inside another "
                                    "value is not allowed")
        return target

    def pop(self):
        if not self.stack:
            raise UnsafePickleError("stack underflow")
        return self.stack.pop()

    def pop_mark(self):
        if not self.metastack:
            raise UnsafePickleError("no MARK for this opcode")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def tuple_of(self, items):
        placed = [self.place(v) for v in items]
        out = tuple(v for v, _, _ in placed)
        return self.new_container(out, 1 + max((d for _, d, _ in placed), default=0),
                                  1 + sum(n for _, _, n in placed))

    def py2_string(self, raw):
        return raw if self.encoding == "bytes" else raw.decode(self.encoding)

    # --- running ---------------------------------------------------------------------------------
    def load(self):
        self.view = memoryview(self.data)
        try:
            return self._run()
        except UnsafePickleError as e:  # raised without the place: add it, once
            raise self.error(str(e)) from None
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError,
                UnicodeError, struct.error) as e:
            raise self.error(f"{type(e).__name__}: {str(e)[:200]}") from None
        finally:
            self.view.release()

    def _run(self):
        dispatch = _DISPATCH
        while True:
            self.op_pos = self.pos
            if self.pos >= self.end:
                raise UnsafePickleError("the data ends before the pickle's STOP")
            code = self.data[self.pos]
            self.pos += 1
            handler = dispatch.get(code)
            if handler is None:
                name = _REFUSED.get(code)
                raise UnsafePickleError(f"opcode {name} is not allowed" if name
                                        else f"unknown opcode 0x{code:02x}")
            if handler is _stop:
                value, _, _ = self.place(self.pop())
                return value, self.pos
            handler(self)


# --- opcode handlers (module-level functions: one dict lookup per opcode) -------------------------
def _proto(m):
    version = m.uint(1)
    if version > _PROTOCOL_MAX:
        raise UnsafePickleError(f"unsupported pickle protocol {version}")


def _frame(m):
    size = m.uint(8)
    if size > m.end - m.pos:
        raise UnsafePickleError(f"a frame claims {size} bytes but only {m.end - m.pos} remain")


def _stop(m):  # handled in _run
    raise AssertionError


def _mark(m):
    m.metastack.append(m.stack)
    m.stack = []


def _pop(m):
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _pop_mark(m):
    m.pop_mark()


def _dup(m):
    if not m.stack:
        raise UnsafePickleError("DUP on an empty stack")
    m.stack.append(m.stack[-1])


def _const(value):
    return lambda m: m.push(value)


def _int_text(m):
    text = m.line()
    m.push(False if text == b"00" else True if text == b"01" else int(text, 0))


def _long_text(m):
    text = m.line()
    m.push(int(text[:-1] if text.endswith(b"L") else text, 0))


def _binint(n, signed):
    return lambda m: m.push(int.from_bytes(m.take(n), "little", signed=signed))


def _long_bin(n):
    def handler(m):
        size = int.from_bytes(m.take(n), "little", signed=n == 4)
        m.push(int.from_bytes(m.take(size), "little", signed=True))
    return handler


def _float_text(m):
    m.push(float(m.line()))


def _binfloat(m):
    m.push(struct.unpack(">d", m.take(8))[0])


def _string_text(m):
    text = m.line()
    if len(text) < 2 or text[0] != text[-1] or text[0] not in b"'\"":
        raise UnsafePickleError("STRING argument is not quoted")
    m.push(m.py2_string(codecs.escape_decode(text[1:-1])[0]))


def _binstring(n):
    return lambda m: m.push(m.py2_string(bytes(m.take(int.from_bytes(m.take(n), "little", signed=n == 4)))))


def _binbytes(n, make=bytes):
    return lambda m: m.push(make(m.take(m.uint(n))))


def _unicode_text(m):
    m.push(str(m.line(), "raw-unicode-escape"))


def _binunicode(n):
    return lambda m: m.push(str(m.take(m.uint(n)), "utf-8", "surrogatepass"))


def _empty(factory):
    return lambda m: m.push(m.new_container(factory()))


def _tuple(m):
    m.push(m.tuple_of(m.pop_mark()))


def _tuple_n(n):
    def handler(m):
        if len(m.stack) < n:
            raise UnsafePickleError("stack underflow")
        items = m.stack[len(m.stack) - n:]
        del m.stack[len(m.stack) - n:]
        m.push(m.tuple_of(items))
    return handler


def _list(m):
    items = m.pop_mark()
    m.push(m.new_container([]))
    _extend(m, items)


def _extend(m, items):
    target = m.mutable((list,), "APPEND")
    for item in items:
        value, depth, nodes = m.place(item)
        m.grow(target, depth, nodes)
        target.append(value)


def _append(m):
    item = m.pop()
    _extend(m, [item])


def _appends(m):
    _extend(m, m.pop_mark())


def _dict(m):
    items = m.pop_mark()
    m.push(m.new_container({}))
    _set_items(m, items)


def _set_items(m, items):
    if len(items) % 2:
        raise UnsafePickleError("SETITEMS with an odd number of items")
    target = m.mutable((dict, collections.OrderedDict), "SETITEM")
    for i in range(0, len(items), 2):
        key = m.key(items[i])  # a leaf: one node
        value, depth, nodes = m.place(items[i + 1])
        m.grow(target, depth, 1 + nodes)
        target[key] = value


def _setitem(m):
    value = m.pop()
    key = m.pop()
    _set_items(m, [key, value])


def _setitems(m):
    _set_items(m, m.pop_mark())


def _additems(m):
    items = m.pop_mark()
    target = m.mutable((set,), "ADDITEMS")
    target.update(m.key(item) for item in items)
    m.grow(target, 0, len(items))


def _frozenset(m):
    items = [m.key(v) for v in m.pop_mark()]
    m.push(m.new_container(frozenset(items), 1, 1 + len(items)))


def _resolve_global(m, module, name):
    entry = m.table.get((module, name))
    if entry is None:
        raise UnsafePickleError(f"forbidden global {module}.{name}")
    m.push(entry)


def _global_text(m):
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    _resolve_global(m, module, name)


def _stack_global(m):
    name = m.pop()
    module = m.pop()
    if type(module) is not str or type(name) is not str:
        raise UnsafePickleError("STACK_GLOBAL needs two strings")
    _resolve_global(m, module, name)


def _reduce(m):
    args = m.pop()
    func = m.pop()
    if not isinstance(func, Constructor):
        raise UnsafePickleError(f"REDUCE may call only an allowed constructor, not {kind(func)}")
    if type(args) is not tuple:
        raise UnsafePickleError(f"{func.name}: arguments must be a tuple, not {kind(args)}")
    try:
        value = func.fn(m, *args)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{func.name}: {e}") from None
    except TypeError as e:  # wrong number of arguments
        raise UnsafePickleError(f"{func.name}: {str(e)[:200]}") from None
    m.push(value)


def _build(m):
    state = m.pop()
    if not m.stack:
        raise UnsafePickleError("BUILD on an empty stack")
    target = m.stack[-1]
    state, _, _ = m.place(state)
    if isinstance(target, Pending):
        if target.built or target.placed:
            raise UnsafePickleError(f"BUILD on a {type(target).__name__} that is already built or in use")
        target.build(m, state)
        target.built = True
        return
    if type(target) is collections.OrderedDict:
        m.mutable((collections.OrderedDict,), "BUILD")
        if state is not None and type(state) is not dict:
            raise UnsafePickleError(f"BUILD on an OrderedDict with state {kind(state)}")
        return  # attributes (PyTorch's _metadata) are dropped: nothing here reads them
    raise UnsafePickleError(f"BUILD on {kind(target)} is not allowed")


def _put(m, key):
    if not m.stack:
        raise UnsafePickleError("memo PUT on an empty stack")
    m.memo[key] = m.stack[-1]


def _get(m, key):
    try:
        m.stack.append(m.memo[key])
    except KeyError:
        raise UnsafePickleError(f"memo key {kind(key)} was never stored") from None


def _persid(m, pid):
    if m.persistent is None:
        raise UnsafePickleError("persistent ids are not allowed in this pickle")
    m.push(m.persistent(pid))


def _binpersid(m):
    pid, _, _ = m.place(m.pop())
    _persid(m, pid)


_OP = {op.name: op.code.encode("latin1")[0] for op in pickletools.opcodes}
_DISPATCH = {
    _OP["PROTO"]: _proto, _OP["FRAME"]: _frame, _OP["STOP"]: _stop,
    _OP["MARK"]: _mark, _OP["POP"]: _pop, _OP["POP_MARK"]: _pop_mark, _OP["DUP"]: _dup,
    _OP["NONE"]: _const(None), _OP["NEWTRUE"]: _const(True), _OP["NEWFALSE"]: _const(False),
    _OP["INT"]: _int_text, _OP["BININT"]: _binint(4, True), _OP["BININT1"]: _binint(1, False),
    _OP["BININT2"]: _binint(2, False), _OP["LONG"]: _long_text, _OP["LONG1"]: _long_bin(1),
    _OP["LONG4"]: _long_bin(4), _OP["FLOAT"]: _float_text, _OP["BINFLOAT"]: _binfloat,
    _OP["STRING"]: _string_text, _OP["BINSTRING"]: _binstring(4), _OP["SHORT_BINSTRING"]: _binstring(1),
    _OP["BINBYTES"]: _binbytes(4), _OP["SHORT_BINBYTES"]: _binbytes(1), _OP["BINBYTES8"]: _binbytes(8),
    _OP["BYTEARRAY8"]: _binbytes(8, bytearray),
    _OP["UNICODE"]: _unicode_text, _OP["BINUNICODE"]: _binunicode(4),
    _OP["SHORT_BINUNICODE"]: _binunicode(1), _OP["BINUNICODE8"]: _binunicode(8),
    _OP["EMPTY_LIST"]: _empty(list), _OP["LIST"]: _list, _OP["APPEND"]: _append, _OP["APPENDS"]: _appends,
    _OP["EMPTY_TUPLE"]: _tuple_n(0), _OP["TUPLE"]: _tuple, _OP["TUPLE1"]: _tuple_n(1),
    _OP["TUPLE2"]: _tuple_n(2), _OP["TUPLE3"]: _tuple_n(3),
    _OP["EMPTY_DICT"]: _empty(dict), _OP["DICT"]: _dict, _OP["SETITEM"]: _setitem, _OP["SETITEMS"]: _setitems,
    _OP["EMPTY_SET"]: _empty(set), _OP["ADDITEMS"]: _additems, _OP["FROZENSET"]: _frozenset,
    _OP["GLOBAL"]: _global_text, _OP["STACK_GLOBAL"]: _stack_global, _OP["REDUCE"]: _reduce,
    _OP["BUILD"]: _build,
    _OP["PUT"]: lambda m: _put(m, int(m.line())), _OP["BINPUT"]: lambda m: _put(m, m.uint(1)),
    _OP["LONG_BINPUT"]: lambda m: _put(m, m.uint(4)), _OP["MEMOIZE"]: lambda m: _put(m, len(m.memo)),
    _OP["GET"]: lambda m: _get(m, int(m.line())), _OP["BINGET"]: lambda m: _get(m, m.uint(1)),
    _OP["LONG_BINGET"]: lambda m: _get(m, m.uint(4)),
    _OP["PERSID"]: lambda m: _persid(m, m.line().decode("ascii")), _OP["BINPERSID"]: _binpersid,
}
# Opcodes that call or look up something outside the table, or take buffers from outside the
# stream: refused by name.
_REFUSED = {_OP[name]: name for name in ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4",
                                         "NEXT_BUFFER", "READONLY_BUFFER")}
