package ai.melodyedge.core

/** A small JSON reader (objects -> Map, arrays -> List, numbers -> Double or Long): enough for manifests and trace headers. */
class JsonReader(private val text: String) {
    private var i = 0

    fun parse(): Any? {
        val v = value()
        skipWs()
        if (i != text.length) fail("trailing characters")
        return v
    }

    private fun fail(msg: String): Nothing = throw IllegalArgumentException("invalid JSON at offset $i: $msg")

    private fun skipWs() {
        while (i < text.length && text[i].isWhitespace()) i++
    }

    private fun value(): Any? {
        skipWs()
        if (i >= text.length) fail("unexpected end")
        return when (val ch = text[i]) {
            '{' -> obj()
            '[' -> arr()
            '"' -> str()
            't' -> literal("true", true)
            'f' -> literal("false", false)
            'n' -> literal("null", null)
            else -> if (ch == '-' || ch.isDigit()) num() else fail("unexpected '$ch'")
        }
    }

    private fun literal(word: String, v: Any?): Any? {
        if (!text.startsWith(word, i)) fail("expected $word")
        i += word.length
        return v
    }

    private fun obj(): Map<String, Any?> {
        val out = LinkedHashMap<String, Any?>()
        i++
        skipWs()
        if (text[i] == '}') return out.also { i++ }
        while (true) {
            skipWs()
            val k = str()
            skipWs()
            if (text[i++] != ':') fail("expected ':'")
            out[k] = value()
            skipWs()
            when (text[i++]) {
                ',' -> continue
                '}' -> return out
                else -> fail("expected ',' or '}'")
            }
        }
    }

    private fun arr(): List<Any?> {
        val out = ArrayList<Any?>()
        i++
        skipWs()
        if (text[i] == ']') return out.also { i++ }
        while (true) {
            out.add(value())
            skipWs()
            when (text[i++]) {
                ',' -> continue
                ']' -> return out
                else -> fail("expected ',' or ']'")
            }
        }
    }

    private fun str(): String {
        if (text[i] != '"') fail("expected a string")
        i++
        val sb = StringBuilder()
        while (true) {
            if (i >= text.length) fail("unterminated string")
            val ch = text[i++]
            when (ch) {
                '"' -> return sb.toString()
                '\\' -> {
                    when (val e = text[i++]) {
                        'n' -> sb.append('\n')
                        't' -> sb.append('\t')
                        'r' -> sb.append('\r')
                        'b' -> sb.append('\b')
                        'f' -> sb.append('\u000c')
                        'u' -> {
                            sb.append(text.substring(i, i + 4).toInt(16).toChar())
                            i += 4
                        }
                        else -> sb.append(e)
                    }
                }
                else -> sb.append(ch)
            }
        }
    }

    private fun num(): Any {
        val start = i
        while (i < text.length && (text[i].isDigit() || text[i] in "+-.eE")) i++
        val s = text.substring(start, i)
        return if (s.any { it in ".eE" }) s.toDouble() else s.toLong()
    }
}

fun parseJson(text: String): Any? = JsonReader(text).parse()

@Suppress("UNCHECKED_CAST")
fun Any?.obj(key: String): Map<String, Any?> =
    ((this as Map<String, Any?>)[key] as? Map<String, Any?>) ?: throw IllegalArgumentException("missing object '$key'")

fun Any?.int(key: String): Int = ((this as Map<*, *>)[key] as? Number)?.toInt() ?: throw IllegalArgumentException("missing number '$key'")

fun Any?.dbl(key: String): Double = ((this as Map<*, *>)[key] as? Number)?.toDouble() ?: throw IllegalArgumentException("missing number '$key'")
