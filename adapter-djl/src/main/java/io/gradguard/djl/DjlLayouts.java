package io.gradguard.djl;

import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.nn.convolutional.Convolution;
import ai.djl.nn.convolutional.Deconvolution;
import ai.djl.nn.core.AbstractEmbedding;
import ai.djl.nn.core.Linear;
import ai.djl.nn.norm.BatchNorm;
import ai.djl.nn.norm.LayerNorm;
import ai.djl.nn.recurrent.RecurrentBlock;
import ai.djl.nn.transformer.IdEmbedding;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import java.util.IdentityHashMap;
import java.util.Map;

/**
 * The role and output-unit layout of each parameter of the DJL block types users train with, and a
 * documented default for the others. DJL keeps PyTorch's layout: the output unit is axis 0.
 *
 * <table>
 *   <caption>DJL parameters (PyTorch engine shapes)</caption>
 *   <tr><th>block</th><th>parameter: shape</th><th>role</th><th>one output unit</th></tr>
 *   <tr><td>Linear</td><td>weight: [out, in]</td><td>WEIGHT</td><td>a row</td></tr>
 *   <tr><td>Conv1d, Conv2d, Conv3d</td><td>weight: [out, in, k...]</td><td>WEIGHT</td><td>a kernel {@code weight[o]}</td></tr>
 *   <tr><td>LSTM, GRU, RNN</td><td>{@code l_0_i2h_WEIGHT}: [gates·hidden, in], {@code l_0_h2h_WEIGHT}:
 *       [gates·hidden, hidden]</td><td>WEIGHT</td><td>a row: one gate of one cell (gates stacked along axis 0)</td></tr>
 *   <tr><td>Embedding (TrainableWordEmbedding, IdEmbedding)</td><td>embedding: [vocab, dim]</td><td>WEIGHT</td>
 *       <td>a row: one token's vector (see {@code Dl4jLayouts} in the DL4J adapter for why)</td></tr>
 *   <tr><td>BatchNorm, LayerNorm</td><td>gamma, beta: [C]</td><td>OTHER</td><td>the whole vector; the running
 *       mean and variance require no gradient and are not read</td></tr>
 *   <tr><td>any</td><td>bias: [out]</td><td>BIAS</td><td>the whole vector (rank 1)</td></tr>
 * </table>
 *
 * <p>Composite blocks built from these need nothing more: the model zoo's ResNet units (convolutions
 * and batch norms) and {@code TransformerEncoderBlock} (its attention's query, key, value and result
 * projections and its feed-forward pair are {@code Linear}, its norms {@code LayerNorm}).
 *
 * <p>Any other block (a transposed convolution, whose PyTorch kernel is {@code [in, out, k...]}, a
 * custom block): the role from {@link Parameter.Type} (WEIGHT, BIAS, else OTHER) and
 * {@link Layout#outputFirst()}; the guard warns once, naming the block.
 */
final class DjlLayouts {
    private DjlLayouts() {
    }

    /** What one parameter is: its role, its layout, and whether its block type is one the table above knows. */
    record Kind(Role role, Layout layout, boolean known) {
    }

    static Kind of(Block owner, Parameter p) {
        Role role = switch (p.getType()) {
            case WEIGHT -> Role.WEIGHT;
            case BIAS -> Role.BIAS;
            default -> Role.OTHER;
        };
        if (owner instanceof BatchNorm || owner instanceof LayerNorm) {
            return new Kind(role, Layout.whole(), true);
        }
        boolean known = owner instanceof Linear || (owner instanceof Convolution && !(owner instanceof Deconvolution))
                || owner instanceof RecurrentBlock || owner instanceof AbstractEmbedding || owner instanceof IdEmbedding;
        return new Kind(role, Layout.outputFirst(), known);
    }

    /** The block that declares each parameter of {@code root} (its own, or a descendant's). */
    static Map<Parameter, Block> owners(Block root) {
        Map<Parameter, Block> out = new IdentityHashMap<>();
        collect(root, out);
        return out;
    }

    private static void collect(Block block, Map<Parameter, Block> out) {
        for (Parameter p : block.getDirectParameters().values()) {
            out.put(p, block);
        }
        for (Block child : block.getChildren().values()) {
            collect(child, out);
        }
    }
}
